"""From an image and run options to a VM spec: the kernel command line lives here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from krait.errors import VmError
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
    # The initramfs root on ramfs: tmpfs would cap it at half the guest's memory.
    "rootfstype=ramfs",
)


@dataclass(frozen=True)
class RunOptions:
    ports: tuple[PortForward, ...] = ()
    memory: int | None = None
    vcpus: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cmdline: str = ""
    accel: str | None = None
    compressed_initrd: bool | None = None  # None: decide by memory (see initrd_compressed)
    workdir: Path | None = None
    console_log: Path | None = None
    # Refuse less memory than the image needs (benchmarks looking for the limit do not).
    check_memory: bool = True


# Only under emulation: the kernel spends a quarter second calibrating and verifying the
# local APIC timer against the PIT (KVM offers a TSC-deadline timer, which needs none).
TCG_CMDLINE = ("noapictimer",)


def kernel_cmdline(image: Image, options: RunOptions, accel: Accel) -> tuple[str, ...]:
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in image.name)[:63] or "krait"
    network = f"ip={protocol.GUEST_ADDR}::{protocol.GATEWAY}:255.255.255.0:{name}:eth0:off"
    boot = {"env": options.env} if options.env else {}
    extras = (image.manifest["boot"].get("cmdline", "") + " " + options.cmdline).split()
    boot_args = [protocol.encode_boot(boot)] if boot else []
    tuned = TCG_CMDLINE if accel.name == "tcg" else ()
    return (*BASE_CMDLINE, *tuned, network, protocol.MARKER, *boot_args, *extras)


# What the guest needs besides its files while it boots: kernel, page tables, Python's heap.
_GUEST_OVERHEAD_MIB = 20


def initrd_compressed(image: Image, memory_mib: int) -> bool:
    """Hand the guest zstd layers only when it is short of memory.

    An uncompressed initramfs boots faster under emulation (nothing to decompress),
    but the guest holds it twice while unpacking: the archive and the files.
    """
    unpacked = sum(layer["cpio_size"] for layer in image.manifest["layers"]) / 2**20
    return memory_mib < 2 * unpacked + _GUEST_OVERHEAD_MIB


def prepare(image_path: Path, options: RunOptions, accel: Accel | None = None,
            image: Image | None = None) -> tuple[Image, VmSpec]:
    """Check the image, unpack what QEMU needs, and describe the VM to start."""
    image = image or open_image(image_path)
    boot = image.manifest["boot"]
    memory = options.memory or int(boot["memory"])
    minimum = int(image.manifest.get("memory", {}).get("minimum_mib", 0))
    if options.check_memory and memory < minimum:
        raise VmError(f"this image needs at least {minimum} MiB of guest memory; "
                      f"{memory} MiB would end in a kernel panic",
                      hint=f"give it --memory {image.manifest['boot']['memory']}M (its default) "
                      f"or at least {minimum}M")
    compressed = options.compressed_initrd
    if compressed is None:
        compressed = initrd_compressed(image, memory)
    kernel, initrd = unpack_for_boot(image, compressed)
    accel = accel or detect_accel(options.accel)
    spec = VmSpec(
        name=image.name,
        kernel=kernel,
        initrd=initrd,
        cmdline=kernel_cmdline(image, options, accel),
        memory=memory,
        vcpus=options.vcpus or int(boot["vcpus"]),
        accel=accel,
        ports=options.ports,
        workdir=options.workdir,
        console_log=options.console_log,
    )
    return image, spec
