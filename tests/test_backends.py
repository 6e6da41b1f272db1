"""The backend seam without a VM: which backend a boot gets, the libvirt domain made from
a spec, and where the fleet places an instance."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from krait.cli.run import options_from_flags
from krait.config.settings import Service
from krait.errors import ConfigError
from krait.fleet.driver import Host, VmDriver
from krait.image.registry import is_ref
from krait.vmm.accel import Accel
from krait.vmm.backends import BACKENDS, ENV, check_known, choose, get_backend, is_uri
from krait.vmm.base import Disk, VmSpec
from krait.vmm.launch import RunOptions
from krait.vmm.libvirt import QEMU_NS, LibvirtBackend, Placed, is_local
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend

SSH = "qemu+ssh://root@10.0.0.7/system"


def test_the_backend_comes_from_the_flag_then_the_environment_then_the_image(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert choose() == "qemu"
    assert choose(uris=(SSH,)) == "libvirt"  # a host named means libvirt
    assert choose(setting="libvirt") == "libvirt"
    monkeypatch.setenv(ENV, "qemu")
    assert choose(setting="libvirt") == "qemu"
    assert choose("libvirt", setting="qemu") == "libvirt"
    monkeypatch.setenv(ENV, "firecracker")
    with pytest.raises(ConfigError, match=r"\$KRAIT_BACKEND firecracker: no such backend"):
        choose()
    with pytest.raises(ConfigError, match="a host URI is for --backend libvirt"):
        get_backend("qemu", SSH)
    assert isinstance(get_backend("libvirt", SSH), LibvirtBackend)
    assert isinstance(get_backend("qemu"), QemuBackend)


def test_services_are_connect_and_hosts_are_on() -> None:
    assert is_uri("qemu:///system") and is_uri(SSH)
    assert not is_uri("db=127.0.0.1:5432")
    options = options_from_flags((), (), None, {"connect": ("db=127.0.0.1:5432",)},
                                 on=(f"qemu:///system,{SSH}",))
    assert options.connect == ("db=127.0.0.1:5432",)
    assert options.hosts == ("qemu:///system", SSH)
    # The old spelling of a host is refused, naming the new one.
    with pytest.raises(ConfigError) as info:
        options_from_flags((), (), None, {"connect": ("db=127.0.0.1:5432", SSH)})
    assert "a host to run on is --on" in info.value.message
    assert info.value.hint == f"krait ... --on {SSH}"
    with pytest.raises(ConfigError, match=r"--on db=1\.2\.3\.4:5: not a host URI"):
        options_from_flags((), (), None, {}, on=("db=1.2.3.4:5",))
    # Over SSH is another host, even at loopback: it is the SSH server's.
    assert is_local("qemu:///system") and not is_local("qemu+ssh://root@127.0.0.1/system")
    assert get_backend("libvirt", SSH).label == "libvirt@10.0.0.7"
    assert get_backend("libvirt", "qemu:///system").label == "libvirt"


def test_every_backend_is_made_by_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert set(BACKENDS) == {"qemu", "libvirt", "process"}
    assert {get_backend(name).name for name in BACKENDS} == set(BACKENDS)
    assert choose("process") == "process"
    with pytest.raises(ConfigError, match="the process backend runs apps on this machine"):
        get_backend("process", SSH)
    with pytest.raises(ConfigError, match="backend firecracker: no such backend"):
        check_known("firecracker")


def test_a_path_is_not_taken_for_a_registry_reference() -> None:
    assert is_ref("localhost:5000/hello:1") and is_ref("registry.example/team/app:2")
    assert is_ref(f"127.0.0.1:5000/app@sha256:{'0' * 64}")
    assert not is_ref("dist/hello") and not is_ref("build/app.krait")
    assert not is_ref("hello.krait")


def spec(**changes: object) -> VmSpec:
    base = VmSpec(name="app", kernel=Path("/k/abc.vmlinux"),
                  disks=(Disk("base", Path("/d/1.erofs")), Disk("app", Path("/d/2.erofs"))),
                  cmdline=("console=ttyS0", "root=/dev/vda"), memory=48, vcpus=2,
                  accel=Accel("tcg", "test"), ports=(PortForward(8080, 80),))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_domain_is_krait_s_vm() -> None:
    placed = Placed("/pool/abc.vmlinux", ("/pool/1.erofs", "/pool/2.erofs"), "/pool/boot.disk")
    domain = ET.fromstring(LibvirtBackend().domain_xml(spec(), "krait-app-1", placed))
    assert domain.get("type") == "qemu"  # TCG here
    assert domain.findtext("os/kernel") == "/pool/abc.vmlinux"
    assert domain.find("os/type").get("machine") == "microvm"  # type: ignore[union-attr]
    assert domain.findtext("os/cmdline") == "console=ttyS0 root=/dev/vda"
    assert (domain.findtext("memory"), domain.findtext("vcpu")) == ("48", "2")
    disks = domain.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [  # type: ignore[union-attr]
        "/pool/1.erofs", "/pool/2.erofs", "/pool/boot.disk"]
    assert all(d.find("readonly") is not None for d in disks)
    assert {a.get("type") for a in domain.iter("address")} == {"virtio-mmio"}
    assert len(domain.findall("devices/serial")) == 2  # console, control port
    assert domain.find("features/acpi") is None  # mmio devices on the command line
    args = [a.get("value") for a in domain.iter(f"{{{QEMU_NS}}}arg")]
    assert args == ["-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80",
                    "-device", "virtio-net-device,netdev=net0"]
    assert {e.text for e in domain if e.tag.startswith("on_")} == {"destroy"}


def test_what_libvirt_cannot_carry_yet_is_refused_before_anything_starts() -> None:
    backend = LibvirtBackend("qemu:///system?socket=/nonexistent")
    with pytest.raises(ConfigError, match="cannot carry declared services"):
        backend.start(spec(services=(Service("db", "127.0.0.1", 5432, 5432),)))
    with pytest.raises(ConfigError, match="no gdb stub or snapshots"):
        backend.start(spec().with_qemu(gdb_port=1234))


def test_instances_go_to_the_host_with_fewest_and_a_failed_host_waits() -> None:
    a, b = Host(LibvirtBackend("qemu:///system"), "a"), Host(LibvirtBackend(SSH), "b")
    driver = VmDriver(RunOptions(), hosts=[a, b])
    assert driver._place() is a
    a.instances = 1
    assert driver._place() is b
    b.failed_until = time.monotonic() + 30
    assert driver._place() is a  # b is skipped for now, though it has fewer
    a.failed_until = time.monotonic() + 30
    assert driver._place() is b  # all failed lately: the fewest is tried anyway
    assert driver._place(tried=(b,)) is a  # one boot tries each host once
    assert driver._place(tried=(a, b)) is None
    driver.executor.shutdown()
