"""A VM as a libvirt domain (XML), made from the same spec and machine as QEMU's command
line; testable without libvirt's binding."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from krait.vmm.base import VmSpec
from krait.vmm.options import UserNetwork

log = logging.getLogger("krait")

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class Placed:
    """Where the spec's files are on the libvirt host."""

    kernel: str
    disks: tuple[str, ...]
    boot: str | None  # this boot's settings, a volume of its own


def domain_xml(spec: VmSpec, name: str, placed: Placed) -> str:
    """The transient domain that runs ``spec`` as ``name``, its files where ``placed``
    says: the machine of :mod:`krait.vmm.machine`, as libvirt writes it."""
    tcg = spec.accel.name == "tcg"
    machine = spec.machine
    domain = ET.Element("domain", {"type": "qemu" if tcg else "kvm"})
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", {"unit": "MiB"}).text = str(spec.memory)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", {"arch": machine.arch, "machine": machine.type}).text = "hvm"
    ET.SubElement(os_, "kernel").text = placed.kernel
    ET.SubElement(os_, "cmdline").text = " ".join(spec.cmdline)
    features = ET.SubElement(domain, "features")
    if machine.acpi:  # without it QEMU announces the virtio-mmio devices on the cmdline
        ET.SubElement(features, "acpi")
    if tcg:
        tcg_features = ET.SubElement(features, "tcg")
        ET.SubElement(tcg_features, "tb-cache", {"unit": "MiB"}).text = str(
            machine.tcg_cache_mib)
    # libvirt's names for QEMU's "max" and "host" models.
    mode = {"max": "maximum", "host": "host-passthrough"}[machine.cpu(tcg)]
    ET.SubElement(domain, "cpu", {"mode": mode})
    ET.SubElement(domain, "clock", {"offset": "utc"})
    # The guest resets to end; nothing is ever restarted by libvirt.
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "controller", {"type": "usb", "model": "none"})  # no PCI
    disks = [(path, True) for path in placed.disks]
    if placed.boot is not None:
        disks.append((placed.boot, True))
    for index, (path, readonly) in enumerate(disks):
        disk = ET.SubElement(devices, "disk", {"type": "file", "device": "disk"})
        ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
        ET.SubElement(disk, "source", {"file": path})
        ET.SubElement(disk, "target", {"dev": f"vd{chr(ord('a') + index)}",
                                       "bus": "virtio"})
        if readonly:
            ET.SubElement(disk, "readonly")
        ET.SubElement(disk, "address", {"type": "virtio-mmio"})
    for port in (0, 1):  # the console, then the control port
        serial = ET.SubElement(devices, "serial", {"type": "pty"})
        ET.SubElement(serial, "target", {"port": str(port)})
    rng = ET.SubElement(devices, "rng", {"model": "virtio"})
    ET.SubElement(rng, "backend", {"model": "random"}).text = machine.rng_source
    ET.SubElement(rng, "address", {"type": "virtio-mmio"})
    ET.SubElement(devices, "memballoon", {"model": "none"})
    # Deny by default, with the forwards: QEMU's restricted user network (libvirt's
    # <interface type='user'> has neither restrict nor forwards without passt).
    args = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    network = UserNetwork("net0", spec.ports, restrict=True).args()
    for value in (*network, "-device", f"{machine.net_device},netdev=net0"):
        ET.SubElement(args, f"{{{QEMU_NS}}}arg", {"value": value})
    ET.register_namespace("qemu", QEMU_NS)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"
