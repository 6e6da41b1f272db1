"""Boot to first HTTP response, measured from outside as a user would see it; the
smallest memory that serves; and where a boot's time goes (its timeline)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from krait.bench.http import first_answer
from krait.bench.result import Result
from krait.errors import VmError
from krait.image.archive import open_image
from krait.vmm.accel import detect_accel
from krait.vmm.base import Backend
from krait.vmm.booted import booted


def boot_once(image: Path, memory: int | None, path: str = "/", timeout: float = 60,
              check_memory: bool = True, backend: Backend | None = None) -> dict[str, object]:
    """One boot: seconds from starting QEMU to the first answer, its status, QEMU's RSS in
    MB (when QEMU is a process of this machine's), and the guest's timeline (seconds since
    QEMU started, per step). ``backend``: QEMU started by krait unless given.

    The client asks as soon as the guest signals readiness on the control port (as a
    load balancer would). A request sent before the app listens is held by QEMU's
    user-mode network, which retries its connection to the guest with a backoff of
    1 s, 2 s, ...: that would measure slirp, not the boot.
    """
    with booted(image, memory=memory, ready_timeout=timeout, check_memory=check_memory,
                backend=backend) as vm:
        status, _ = first_answer(vm.url(path), vm.started + timeout)
        answered = time.monotonic()
        rss = psutil.Process(vm.vm.pid).memory_info().rss / 1e6 if vm.vm.pid else None
        # The guest's clock starts with its kernel; the host saw "ready" at vm.ready.
        guest = dict(vm.vm.timeline)
        offset = (vm.ready - vm.started) - guest.get("ready", vm.ready - vm.started)
        timeline = {"qemu_to_kernel": round(max(0.0, offset), 4),
                    **{step: round(offset + t, 4) for step, t in guest.items()},
                    "first_answer": round(answered - vm.started, 4)}
    return {"seconds": answered - vm.started, "status": status, "qemu_rss_mb": rss,
            "timeline": timeline}


def bench_boot(image: Path, runs: int = 10, memory: int | None = None) -> Result:
    samples, rss, timelines = [], [], []
    for _ in range(runs):
        one = boot_once(image, memory)
        if one["status"] != 200:
            raise VmError(f"the app answered {one['status']}, not 200")
        samples.append(round(float(one["seconds"]), 4))  # type: ignore[arg-type]
        rss.append(round(float(one["qemu_rss_mb"]), 1))  # type: ignore[arg-type]
        timelines.append(one["timeline"])
    memory_mib = memory or open_image(image).manifest.boot.memory
    return Result("boot-to-first-200", "s", samples, detect_accel().name,
                  params={"image": str(image), "memory_mib": memory_mib},
                  extra={"qemu_rss_mb": rss, "image_bytes": image.stat().st_size,
                         "timelines": timelines})


def bench_memory(image: Path, candidates: tuple[int, ...] = (16, 20, 24, 28, 32, 40, 48, 64)
                 ) -> Result:
    """The smallest guest memory (MiB) at which the app still serves, and QEMU's RSS."""
    served: dict[int, bool] = {}
    seconds: dict[int, float] = {}
    rss: dict[int, float] = {}
    for mib in candidates:
        try:
            one = boot_once(image, mib, timeout=30, check_memory=False)
            served[mib] = one["status"] == 200
            seconds[mib] = round(float(one["seconds"]), 3)  # type: ignore[arg-type]
            rss[mib] = round(float(one["qemu_rss_mb"]), 1)  # type: ignore[arg-type]
        except VmError:
            served[mib] = False
    ok = [m for m, s in served.items() if s]
    needs = open_image(image).manifest.memory
    return Result("smallest-memory-that-serves", "MiB", [float(min(ok))] if ok else [],
                  detect_accel().name, params={"image": str(image), "tried": list(candidates)},
                  extra={"served": served, "boot_s": seconds, "qemu_rss_mb": rss,
                         "image_minimum_mib": needs.minimum_mib,
                         "image_default_mib": needs.default_mib})
