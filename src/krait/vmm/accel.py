"""Choosing the accelerator: KVM where it really works, TCG otherwise, and why."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str  # one line a user can read

    @property
    def is_kvm(self) -> bool:
        return self.name == "kvm"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _loaded_modules() -> set[str]:
    """Kernel modules, loadable or built in (/sys/module lists both)."""
    try:
        return {p.name for p in Path("/sys/module").iterdir()}
    except OSError:
        return set()


def detect_accel(requested: str | None = None) -> Accel:
    """KVM if /dev/kvm is real hardware virtualization we can open, else TCG with a reason.

    PVM (``kvm_pvm``) offers a /dev/kvm that ordinary guest kernels cannot boot on (they
    hang or die with "emulation failure"), so it counts as unusable.
    """
    requested = requested or os.environ.get("KRAIT_ACCEL") or "auto"
    if requested == "tcg":
        return Accel("tcg", "TCG (software emulation), as requested")
    problem = _kvm_problem()
    if requested == "kvm":
        return Accel("kvm", "KVM, as requested" + (f" (warning: {problem})" if problem else ""))
    if problem:
        return Accel("tcg", f"TCG (software emulation): {problem}")
    return Accel("kvm", "KVM (hardware virtualization)")


def _kvm_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this machine"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not accessible (add yourself to the kvm group)"
    if "kvm_pvm" in _loaded_modules():
        return "/dev/kvm is PVM (kvm_pvm), which does not boot ordinary guest kernels"
    flags = _cpu_flags()
    if not flags & {"vmx", "svm"}:
        return "the CPU offers no hardware virtualization (no vmx/svm flag)"
    return None
