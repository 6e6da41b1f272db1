"""A general-purpose VM: Debian with systemd as init and Debian's stock cloud kernel,
the app started by a systemd unit under its usual server (gunicorn or uvicorn, see
debian.py), booted by the same QEMU as the unikernel.

Same QEMU binary, accelerator, CPU model, memory, user-mode network with a host port
forward and virtio-rng as krait's own VMs; the root is an ext4 disk on virtio-blk
(opened with snapshot=on, so every boot starts from the same bytes). The machine is
microvm *with* ACPI, which Debian's kernel needs to find its virtio-mmio devices; under
TCG that kernel also needs ``tsc_early_khz`` or it hangs calibrating the TSC. The kernel
and initramfs are booted directly (no firmware, no boot loader), which if anything
flatters the general-purpose VM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from krait.bench.compare._common import Settings, require_tool, tree_mb
from krait.bench.compare.base import Running, Variant
from krait.bench.compare.debian import APP_DIR, build_venv, install, server_argv
from krait.bench.compare.payload import payload_digest
from krait.bench.compare.rootfs import build_debian_root
from krait.bench.compare.surface import surface_of_tree
from krait.errors import VmError
from krait.paths import cache_dir
from krait.run import run, spawn
from krait.vmm.options import (
    Accelerator,
    Chardev,
    Cpu,
    Device,
    DirectBoot,
    Flag,
    Machine,
    Memory,
    Object,
    Option,
    PortForward,
    QemuCommand,
    Serial,
    UserNetwork,
)
from krait.vmm.qemu import QEMU, find_qemu

GUEST_ADDR, GATEWAY = "10.0.2.15", "10.0.2.2"
DISK_HEADROOM = 1.3
VCPUS = 1  # as krait's own VMs


def systemd_word(word: str, command: bool = False) -> str:
    """One word of a unit's command line (``command``) or of an Environment= list, as
    systemd reads it back: ``%`` specifiers escaped, and ``$`` variables on command lines;
    quoted when it holds a space, a quote or a backslash."""
    word = word.replace("%", "%%")
    if command:
        word = word.replace("$", "$$")
    if any(c.isspace() or c in "\"'\\" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def unit(argv: list[str], env: dict[str, str]) -> str:
    """The systemd service that starts the app's server."""
    lines = ["[Unit]", "Description=The app under comparison (krait bench compare)",
             "After=network.target", "", "[Service]", f"WorkingDirectory={APP_DIR}"]
    lines += [f"Environment={systemd_word(f'{k}={v}')}" for k, v in sorted(env.items())]
    lines += ["ExecStart=" + " ".join(systemd_word(a, command=True) for a in argv),
              "Restart=no", "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


NETWORK = f"""\
[Match]
Name=en* eth*

[Network]
Address={GUEST_ADDR}/24
Gateway={GATEWAY}
DNS=10.0.2.3
"""


@dataclass(frozen=True)
class Drive(Option):
    """A raw disk image for a virtio-blk device; snapshot=on keeps the file unchanged."""

    id: str
    file: Path
    snapshot: bool = True

    def args(self) -> list[str]:
        props = f"file={str(self.file).replace(',', ',,')},format=raw,if=none,id={self.id}"
        return ["-drive", props + (",snapshot=on" if self.snapshot else "")]


def tsc_khz() -> int:
    """The host's TSC frequency as /proc/cpuinfo reports it (the guest's under TCG is
    emulated; the value only has to be plausible to skip calibration)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except OSError:
        pass
    return 2_000_000


def configure_root(root: Path, payload: Path, venv: Path, service: str) -> None:
    """The app and its environment, its systemd unit, a static network and the root file
    system entry."""
    install(root, payload, venv)
    system = root / "etc/systemd/system"
    (system / "krait-app.service").write_text(service)
    (root / "etc/systemd/network").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/network/10-eth.network").write_text(NETWORK)
    links = {
        "multi-user.target.wants/krait-app.service": "/etc/systemd/system/krait-app.service",
        "multi-user.target.wants/systemd-networkd.service":
            "/lib/systemd/system/systemd-networkd.service",
        "sockets.target.wants/systemd-networkd.socket":
            "/lib/systemd/system/systemd-networkd.socket",
    }
    for link, target in links.items():
        path = system / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)
    (root / "etc/hostname").write_text("gpvm\n")
    (root / "etc/fstab").write_text("LABEL=root / ext4 errors=remount-ro 0 1\n")


def boot_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise VmError(f"no kernel or initramfs in {root / 'boot'}",
                      hint="delete the cached root so it is bootstrapped again")
    return kernels[-1], initrds[-1]


def build_disk(root: Path, disk: Path) -> None:
    """An ext4 image of ``root`` (mkfs.ext4 -d: no loop device, no mount)."""
    mkfs = require_tool("mkfs.ext4", "e2fsprogs")
    used = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)
    size_mib = int(used * DISK_HEADROOM / (1 << 20)) + 64
    tmp = disk.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    run([mkfs, "-q", "-F", "-t", "ext4", "-L", "root", "-d", root, tmp, f"{size_mib}M"],
        timeout=600)
    tmp.replace(disk)


def gpvm_command(kernel: Path, initrd: Path, disk: Path, settings: Settings, port: int,
                 guest_port: int, console_log: Path) -> QemuCommand:
    accel = settings.accel or "tcg"
    tcg = accel == "tcg"
    append = ["console=ttyS0", "root=LABEL=root", "rw", "quiet"]
    if tcg:
        append.append(f"tsc_early_khz={tsc_khz()}")
    return QemuCommand(QEMU).add(
        Machine("microvm", (("acpi", True),)),
        Accelerator(accel, tb_size_mib=64 if tcg else None),
        Cpu("max" if tcg else "host", VCPUS),
        Memory(settings.memory_mib),
        Flag("-nodefaults"),
        Flag("-no-user-config"),
        Flag("-nographic"),
        Flag("-no-reboot"),
        DirectBoot(kernel, tuple(append), initrd),
        Chardev("con", "file", (("path", console_log),)),
        Serial("con"),
        Drive("disk0", disk),
        Device("virtio-blk-device", (("drive", "disk0"),)),
        UserNetwork("net0", (PortForward(port, guest_port),)),
        Device("virtio-net-device", (("netdev", "net0"),)),
        Object("rng-random", "rng0", (("filename", "/dev/urandom"),)),
        Device("virtio-rng-device", (("rng", "rng0"),)),
    )


class _Qemu(Running):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def host_pss_mb(self) -> float:
        return tree_mb(self.pid, "pss")


class GeneralPurposeVmVariant(Variant):
    name = "gp-vm"
    label = "general-purpose VM (Debian, systemd)"

    def prepare(self) -> None:
        find_qemu()
        self.root = build_debian_root("vm")
        venv = build_venv(self.app)
        argv = server_argv(self.app, self.app.ports[0], VCPUS)
        service = unit(argv, self.app.env)
        configure_root(self.root, self.payload, venv, service)
        folder = cache_dir() / "bench" / "gpvm"
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{payload_digest(self.payload)}\0{venv.name}\0{service}"
                             .encode()).hexdigest()[:16]
        self.disk = folder / f"disk-{key}.img"
        if not self.disk.exists():
            for old in folder.glob("disk-*.img"):
                old.unlink()
            build_disk(self.root, self.disk)
        self.kernel, self.initrd = boot_files(self.root)
        cmd = gpvm_command(self.kernel, self.initrd, self.disk, self.settings, 8080,
                           self.app.ports[0], Path("console.log"))
        self.details = {"machine": "microvm,acpi=on", "kernel": self.kernel.name,
                        "init": "systemd", "server_argv": argv, "root": str(self.root),
                        "disk": str(self.disk),
                        "qemu_argv": cmd.argv()}

    def artifact_bytes(self) -> int:
        return self.disk.stat().st_blocks * 512  # allocated: the image file is sparse

    def surface(self) -> dict[str, int | None]:
        return surface_of_tree(self.root)

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        workdir = Path(tempfile.mkdtemp(prefix="krait-gpvm-"))
        console = workdir / "console.log"
        argv = gpvm_command(self.kernel, self.initrd, self.disk, self.settings, port,
                            self.app.ports[0], console).argv()
        try:
            with spawn(argv, grace=1, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE) as proc:
                yield _Qemu(proc.pid)
        except BaseException:
            if console.exists():
                tail = console.read_text(errors="replace").splitlines()[-30:]
                self.details["console_tail"] = tail
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
