"""krait.vmm.options and QemuBackend.command: QEMU's argv, without starting QEMU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from krait.config.settings import Service
from krait.vmm import accel as accel_mod
from krait.vmm.accel import Accel, detect_accel
from krait.vmm.base import Disk, VmSpec
from krait.vmm.options import (
    Accelerator,
    Chardev,
    Device,
    Machine,
    Object,
    PortForward,
    QemuCommand,
    UserNetwork,
)
from krait.vmm.qemu import QEMU, QemuBackend


def spec(**changes: object) -> VmSpec:
    values: dict[str, object] = {
        "name": "demo",
        "kernel": Path("/images/vmlinux"),
        "disks": (Disk("base", Path("/cache/base.erofs")), Disk("app", Path("/cache/app.erofs"))),
        "cmdline": ("console=ttyS0", "quiet", "krait.guest=1"),
        "memory": 48,
        "vcpus": 2,
        "accel": Accel("tcg", "x"),
        "ports": (PortForward(8080, 8080),),
        "workdir": Path("/run/krait/demo"),
    }
    values.update(changes)
    return VmSpec(**values)  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def one(argv: list[str], flag: str) -> str:
    values = option(argv, flag)
    assert len(values) == 1, (flag, values)
    return values[0]


def test_binary_and_machine() -> None:
    argv = QemuBackend().command(spec())
    assert argv[0] == QEMU
    assert one(argv, "-M") == "microvm,acpi=off"


def test_tcg_accel_and_cpu() -> None:
    argv = QemuBackend().command(spec())
    accel = one(argv, "-accel")
    assert accel.split(",")[0] == "tcg"
    assert "tb-size=64" in accel.split(",")
    assert one(argv, "-cpu") == "max"
    assert one(argv, "-smp") == "2"


def test_kvm_accel_and_cpu() -> None:
    argv = QemuBackend().command(spec(accel=Accel("kvm", "x")))
    assert one(argv, "-accel") == "kvm"
    assert one(argv, "-cpu") == "host"


def test_memory() -> None:
    assert one(QemuBackend().command(spec()), "-m") == "48M"


def test_flags() -> None:
    argv = QemuBackend().command(spec())
    for flag in ("-nodefaults", "-no-reboot", "-no-user-config", "-nographic"):
        assert argv.count(flag) == 1, flag


def test_direct_boot_from_read_only_disks_in_order() -> None:
    argv = QemuBackend().command(spec())
    assert one(argv, "-kernel") == "/images/vmlinux"
    assert "-initrd" not in argv
    assert one(argv, "-append") == "console=ttyS0 quiet krait.guest=1"
    assert option(argv, "-drive") == [
        "file=/cache/base.erofs,if=none,id=disk-base,format=raw,readonly=on",
        "file=/cache/app.erofs,if=none,id=disk-app,format=raw,readonly=on"]
    devices = option(argv, "-device")
    assert devices.index("virtio-blk-device,drive=disk-base") < devices.index(
        "virtio-blk-device,drive=disk-app")


def test_port_forward() -> None:
    argv = QemuBackend().command(spec())
    netdev = one(argv, "-netdev")
    assert netdev.split(",")[0] == "user"
    assert "id=net0" in netdev.split(",")
    assert "hostfwd=tcp:127.0.0.1:8080-:8080" in netdev.split(",")


def test_several_port_forwards() -> None:
    ports = (PortForward(8080, 80), PortForward(9443, 443, "0.0.0.0"))
    netdev = one(QemuBackend().command(spec(ports=ports)), "-netdev")
    assert netdev.split(",").count("hostfwd=tcp:127.0.0.1:8080-:80") == 1
    assert netdev.split(",").count("hostfwd=tcp:0.0.0.0:9443-:443") == 1


def test_no_ports_and_no_way_out() -> None:
    assert one(QemuBackend().command(spec(ports=())), "-netdev") == "user,id=net0,restrict=on"


def test_declared_services_are_one_forward_to_the_tunnel_socket() -> None:
    db = Service("db", "127.0.0.1", 5432, 5432)
    netdev = one(QemuBackend().command(spec(services=(db,))), "-netdev").split(",")
    assert "restrict=on" in netdev
    assert [p for p in netdev if p.startswith("guestfwd=")] == [
        "guestfwd=tcp:10.0.2.100:1-unix:/run/krait/demo/tunnel.sock"]


def test_devices() -> None:
    devices = option(QemuBackend().command(spec()), "-device")
    drivers = [d.split(",")[0] for d in devices]
    assert "virtio-net-device" in drivers
    assert "virtio-rng-device" in drivers
    assert "virtio-net-device,netdev=net0" in devices
    assert "virtio-rng-device,rng=rng0" in devices
    (serial,) = [d for d in devices if d.startswith("isa-serial")]
    props = serial.split(",")[1:]
    assert "chardev=ctl" in props
    assert f"iobase={0x2F8}" in props
    assert "irq=3" in props


def test_control_port_chardev() -> None:
    argv = QemuBackend().command(spec())
    chardevs = option(argv, "-chardev")
    (ctl,) = [c for c in chardevs if "id=ctl" in c.split(",")]
    parts = ctl.split(",")
    assert parts[0] == "socket"
    assert "path=/run/krait/demo/control.sock" in parts
    assert "server=on" in parts and "wait=off" in parts


def test_console() -> None:
    argv = QemuBackend().command(spec())
    assert one(argv, "-serial") == "chardev:con"
    assert "stdio,id=con,signal=off" in option(argv, "-chardev")
    # With a log file too: krait reads the console and writes the (bounded) log itself.
    logged = QemuBackend().command(spec(console_log=Path("/var/log/demo.log")))
    assert option(logged, "-chardev") == option(argv, "-chardev")
    assert not any("demo.log" in a for a in logged)


def test_rng_object() -> None:
    argv = QemuBackend().command(spec())
    assert one(argv, "-object") == "rng-random,id=rng0,filename=/dev/urandom"


def test_no_workdir_uses_a_placeholder() -> None:
    argv = QemuBackend().command(spec(workdir=None))
    assert any("path=WORKDIR/control.sock" in c for c in option(argv, "-chardev"))


def test_commas_in_values_are_doubled() -> None:
    argv = QemuBackend().command(spec(workdir=Path("/tmp/a,b")))
    chardevs = option(argv, "-chardev")
    assert "socket,id=ctl,path=/tmp/a,,b/control.sock,server=on,wait=off" in chardevs


def test_option_objects() -> None:
    assert Device("virtio-blk-device", (("drive", "a,b,,c"),)).args() == [
        "-device", "virtio-blk-device,drive=a,,b,,,,c"]
    assert Device("isa-debug-exit").args() == ["-device", "isa-debug-exit"]
    assert Machine("microvm", (("acpi", False), ("rtc", True))).args() == [
        "-M", "microvm,acpi=off,rtc=on"]
    assert Machine("q35", ()).args() == ["-M", "q35"]
    assert Accelerator("tcg").args() == ["-accel", "tcg"]
    assert Accelerator("kvm", tb_size_mib=64).args() == ["-accel", "kvm"]
    assert Chardev("c", "null").args() == ["-chardev", "null,id=c"]
    assert Object("memory-backend-ram", "m0", (("size", "64M"),)).args() == [
        "-object", "memory-backend-ram,id=m0,size=64M"]
    assert UserNetwork(restrict=True).args() == ["-netdev", "user,id=net0,restrict=on"]
    assert UserNetwork(restrict=False).args() == ["-netdev", "user,id=net0"]
    assert UserNetwork(tunnel=Path("/w/t.sock")).args() == [
        "-netdev", "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:1-unix:/w/t.sock"]
    assert PortForward(1, 2, "::1").render() == "tcp:::1:1-:2"


def test_qemu_command_order() -> None:
    cmd = QemuCommand("qemu").add(Machine()).add(Accelerator("tcg"), Device("x"))
    assert cmd.argv() == ["qemu", "-M", "microvm,acpi=off", "-accel", "tcg", "-device", "x"]


# -- choosing the accelerator -------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_env_accel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KRAIT_ACCEL", raising=False)


def test_tcg_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "_kvm_problem", lambda: None)
    accel = detect_accel("tcg")
    assert accel.name == "tcg"
    assert not accel.is_kvm
    assert "requested" in accel.reason


def test_auto_falls_back_to_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "_kvm_problem", lambda: "no /dev/kvm, for the test")
    for requested in ("auto", None):
        accel = detect_accel(requested)
        assert accel.name == "tcg"
        assert "no /dev/kvm, for the test" in accel.reason


def test_auto_uses_kvm_without_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "_kvm_problem", lambda: None)
    accel = detect_accel("auto")
    assert accel.name == "kvm"
    assert accel.is_kvm


def test_kvm_requested_despite_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "_kvm_problem", lambda: "PVM here")
    accel = detect_accel("kvm")
    assert accel.name == "kvm"
    assert "PVM here" in accel.reason


def test_env_variable_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "_kvm_problem", lambda: None)
    monkeypatch.setenv("KRAIT_ACCEL", "tcg")
    assert detect_accel().name == "tcg"
    assert detect_accel("kvm").name == "kvm"  # an explicit request wins


def test_kvm_problem_without_vmx(monkeypatch: pytest.MonkeyPatch) -> None:
    real_exists, real_access = accel_mod.os.path.exists, accel_mod.os.access
    monkeypatch.setattr(accel_mod.os.path, "exists",
                        lambda p: p == "/dev/kvm" or real_exists(p))
    monkeypatch.setattr(accel_mod.os, "access",
                        lambda p, m: p == "/dev/kvm" or real_access(p, m))
    monkeypatch.setattr(accel_mod, "_loaded_modules", lambda: {"kvm", "kvm_intel"})
    monkeypatch.setattr(accel_mod, "_cpu_flags", lambda: {"fpu", "sse2"})
    problem = accel_mod._kvm_problem()
    assert problem is not None and "vmx" in problem
    monkeypatch.setattr(accel_mod, "_cpu_flags", lambda: {"fpu", "vmx"})
    assert accel_mod._kvm_problem() is None
    monkeypatch.setattr(accel_mod, "_loaded_modules", lambda: {"kvm", "kvm_pvm"})
    problem = accel_mod._kvm_problem()
    assert problem is not None and "PVM" in problem


def test_qemu_runs_sandboxed_and_not_as_root() -> None:
    argv = QemuBackend().command(spec())
    sandbox = one(argv, "-sandbox").split(",")
    assert sandbox[0] == "on"
    assert {"obsolete=deny", "spawn=deny", "resourcecontrol=deny"} <= set(sandbox)
    if os.geteuid() == 0:
        assert one(argv, "-runas") == "nobody" and "elevateprivileges=allow" in sandbox
    else:
        assert "-runas" not in argv and "elevateprivileges=deny" in sandbox
