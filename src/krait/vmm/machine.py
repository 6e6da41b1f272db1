"""The machine every krait VM is, whichever backend runs it.

One profile, rendered twice: as QEMU's command line by the QEMU backend
(:mod:`krait.vmm.qemu`) and as a libvirt domain by the libvirt backend
(:mod:`krait.vmm.libvirt.domain`). A change to the machine is made here, once, and both
see it (``tests/test_machine.py`` renders one profile both ways).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    """A microvm: no PCI, no ACPI, no firmware to speak of; the kernel booted directly,
    its devices virtio on the MMIO bus, two 16550 UARTs, and QEMU's user network."""

    arch: str = "x86_64"
    type: str = "microvm"
    # Without ACPI QEMU announces the virtio-mmio devices on the kernel command line
    # (virtio_mmio.device=...), so the guest needs no ACPI support.
    acpi: bool = False
    # Under TCG: a small translation cache keeps an idle instance cheap.
    tcg_cache_mib: int = 64
    # ttyS0 is the console, ttyS1 the control port (krait.guest.protocol); the second
    # UART where a PC has it.
    control_uart: tuple[tuple[str, int], ...] = (("iobase", 0x2F8), ("irq", 3))
    disk_device: str = "virtio-blk-device"
    net_device: str = "virtio-net-device"
    rng_source: str = "/dev/urandom"

    def cpu(self, tcg: bool) -> str:
        """QEMU's CPU model: everything TCG can emulate, or the host's own under KVM."""
        return "max" if tcg else "host"


MICROVM = Machine()
