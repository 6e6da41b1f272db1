"""From an image and run options to a VM spec: the kernel command line lives here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from krait.guest import protocol
from krait.image.archive import Image, open_image, unpack_for_boot
from krait.vmm.accel import Accel, detect_accel
from krait.vmm.base import VmSpec
from krait.vmm.options import PortForward

# Always on the command line. Later arguments win, so the user's extras come last.
BASE_CMDLINE = (
    "console=ttyS0",
    "8250.nr_uarts=2",
    # The guest ends by resetting; a triple fault is the reset that needs no firmware.
    "reboot=t",
    "panic=-1",
    "quiet",
    # CPython asks for random bytes at start-up; never wait for the entropy pool.
    "random.trust_cpu=on",
    # One program and no other user in the guest: nothing for speculation mitigations to
    # protect, and patching them in costs a quarter second under emulation.
    "mitigations=off",
)


@dataclass(frozen=True)
class RunOptions:
    ports: tuple[PortForward, ...] = ()
    memory: int | None = None
    vcpus: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cmdline: str = ""
    accel: str | None = None
    compressed_initrd: bool = True
    workdir: Path | None = None
    console_log: Path | None = None


def kernel_cmdline(image: Image, options: RunOptions) -> tuple[str, ...]:
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in image.name)[:63] or "krait"
    network = f"ip={protocol.GUEST_ADDR}::{protocol.GATEWAY}:255.255.255.0:{name}:eth0:off"
    boot = {"env": options.env} if options.env else {}
    extras = (image.manifest["boot"].get("cmdline", "") + " " + options.cmdline).split()
    return (*BASE_CMDLINE, network, protocol.MARKER, protocol.encode_boot(boot), *extras)


def prepare(image_path: Path, options: RunOptions, accel: Accel | None = None,
            image: Image | None = None) -> tuple[Image, VmSpec]:
    """Check the image, unpack what QEMU needs, and describe the VM to start."""
    image = image or open_image(image_path)
    kernel, initrd = unpack_for_boot(image, options.compressed_initrd)
    boot = image.manifest["boot"]
    spec = VmSpec(
        name=image.name,
        kernel=kernel,
        initrd=initrd,
        cmdline=kernel_cmdline(image, options),
        memory=options.memory or int(boot["memory"]),
        vcpus=options.vcpus or int(boot["vcpus"]),
        accel=accel or detect_accel(options.accel),
        ports=options.ports,
        workdir=options.workdir,
        console_log=options.console_log,
    )
    return image, spec
