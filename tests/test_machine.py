"""One machine, two renderings: the profile of krait.vmm.machine is what QEMU's command
line and libvirt's domain are both made from, so a change to it reaches both."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

from krait.vmm.accel import Accel
from krait.vmm.base import Disk, VmSpec
from krait.vmm.libvirt import QEMU_NS, Placed, domain_xml
from krait.vmm.machine import MICROVM
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend


def spec(**changes: object) -> VmSpec:
    base = VmSpec(name="app", kernel=Path("/k/vmlinux"), disks=(Disk("base", Path("/d/1")),),
                  cmdline=("console=ttyS0",), memory=48, vcpus=1, accel=Accel("tcg", "test"),
                  ports=(PortForward(8080, 80),), workdir=Path("/w"))
    return replace(base, **changes)  # type: ignore[arg-type]


def both(s: VmSpec) -> tuple[str, ET.Element]:
    argv = " ".join(QemuBackend().command(s))
    return argv, ET.fromstring(domain_xml(s, "krait-app", Placed("/p/k", ("/p/1",), None)))


def test_the_microvm_both_ways() -> None:
    argv, domain = both(spec())
    assert "-M microvm,acpi=off" in argv and domain.find("os/type").get(  # type: ignore[union-attr]
        "machine") == "microvm"
    assert domain.find("features/acpi") is None
    assert "tb-size=64" in argv and domain.findtext("features/tcg/tb-cache") == "64"
    assert "-cpu max" in argv and domain.find("cpu").get("mode") == "maximum"  # type: ignore[union-attr]
    assert "filename=/dev/urandom" in argv and domain.findtext("devices/rng/backend") == (
        "/dev/urandom")
    assert "virtio-net-device,netdev=net0" in argv
    assert "virtio-net-device,netdev=net0" in [a.get("value")
                                               for a in domain.iter(f"{{{QEMU_NS}}}arg")]
    assert "isa-serial,chardev=ctl,iobase=760,irq=3" in argv  # ttyS1: libvirt's 2nd serial
    assert len(domain.findall("devices/serial")) == 2


def test_a_change_to_the_profile_reaches_both() -> None:
    other = replace(MICROVM, tcg_cache_mib=32, rng_source="/dev/random", acpi=True)
    argv, domain = both(spec(machine=other))
    assert "tb-size=32" in argv and domain.findtext("features/tcg/tb-cache") == "32"
    assert "filename=/dev/random" in argv and domain.findtext("devices/rng/backend") == (
        "/dev/random")
    assert "-M microvm,acpi=on" in argv and domain.find("features/acpi") is not None
    kvm_argv, kvm = both(spec(accel=Accel("kvm", "test")))
    assert "-cpu host" in kvm_argv and kvm.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert kvm.get("type") == "kvm" and kvm.find("features/tcg") is None
