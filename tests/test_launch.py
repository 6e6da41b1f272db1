"""The kernel command line, from an image manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.config.settings import Service
from krait.errors import ConfigError, VmError
from krait.guest import protocol
from krait.image.manifest import BootDefaults
from krait.vmm.accel import Accel
from krait.vmm.base import Disk, VmSpec
from krait.vmm.launch import RunOptions, boot_settings, kernel_cmdline, services
from krait.vmm.qemu import QemuBackend

from ._manifests import disk, image

TCG = Accel("tcg", "test")
KVM = Accel("kvm", "test")


def test_marker_console_and_network_are_always_there() -> None:
    args = kernel_cmdline(image(), RunOptions(), TCG)
    assert protocol.MARKER in args
    assert "console=ttyS0" in args
    assert "reboot=t" in args and "panic=-1" in args
    assert any(a.startswith("ip=10.0.2.15::10.0.2.2:255.255.255.0:hello:eth0") for a in args)


def test_timer_calibration_and_checks_are_skipped_only_under_tcg() -> None:
    for arg in ("noapictimer", "no_timer_check"):
        assert arg in kernel_cmdline(image(), RunOptions(), TCG)
        assert arg not in kernel_cmdline(image(), RunOptions(), KVM)


def test_boot_env_travels_on_its_own_disk_only_when_given() -> None:
    plain = kernel_cmdline(image(), RunOptions(), TCG)
    assert not any(a.startswith(protocol.BOOT_PARAM + "=") for a in plain)
    assert boot_settings(image(), RunOptions()) == b""
    options = RunOptions(env={"A": "b c"})
    # After the image's two disks (/dev/vda, /dev/vdb).
    assert f"{protocol.BOOT_PARAM}=/dev/vdc" in kernel_cmdline(image(), options, TCG)
    assert protocol.decode_boot(boot_settings(image(), options)) == {"env": {"A": "b c"}}


def test_user_extras_come_last_so_they_win() -> None:
    args = kernel_cmdline(image(cmdline="loglevel=4"), RunOptions(cmdline="loglevel=7"), TCG)
    assert args[-2:] == ("loglevel=4", "loglevel=7")
    assert args.index("quiet") < args.index("loglevel=7")


def test_hostname_is_sanitised() -> None:
    args = kernel_cmdline(image(name="my app_1"), RunOptions(), TCG)
    assert any(":my-app-1:eth0:" in a for a in args)


def test_the_base_layer_is_the_root_and_the_others_follow_in_order() -> None:
    args = kernel_cmdline(image(), RunOptions(), TCG)
    assert {"root=/dev/vda", "rootfstype=erofs", "ro", "init=/init"} <= set(args)
    assert f"{protocol.DISKS_PARAM}=app" in args
    three = image(layers=(disk("base", "/"), disk("packages", "/krait/packages"),
                          disk("app", "/krait/app")))
    assert f"{protocol.DISKS_PARAM}=packages,app" in kernel_cmdline(three, RunOptions(), TCG)


def test_a_command_line_the_kernel_would_cut_is_refused() -> None:
    kernel_cmdline(image(), RunOptions(env={"A": "x" * 5000}), TCG)  # not on it: fits
    kernel_cmdline(image(), RunOptions(cmdline="x" * 1500), TCG)
    with pytest.raises(VmError, match="over the kernel's 2047"):
        kernel_cmdline(image(), RunOptions(cmdline="x" * 1900), TCG)
    with pytest.raises(ConfigError, match="over 65536"):
        boot_settings(image(), RunOptions(env={"A": "x" * 70000}))


def test_no_env_value_is_on_qemus_command_line() -> None:
    """QEMU's argv is readable by every local user (/proc/PID/cmdline)."""
    img, options = image(), RunOptions(env={"DB_PASSWORD": "hunter2"})
    spec = VmSpec("hello", Path("vmlinux"), (Disk("base", Path("b")), Disk("app", Path("a"))),
                  kernel_cmdline(img, options, TCG), 48, 1, TCG,
                  boot_settings=boot_settings(img, options))
    argv = " ".join(QemuBackend().command(spec))
    assert "hunter2" not in argv and "DB_PASSWORD" not in argv
    assert "file=WORKDIR/boot.disk" in argv and f"{protocol.BOOT_PARAM}=/dev/vdc" in argv


def test_services_come_from_the_image_and_a_boot_points_them_elsewhere() -> None:
    img = image(boot=BootDefaults(48, 1, "", ("db=127.0.0.1:5432", "cache=127.0.0.1:6379")))
    chosen = services(img, RunOptions(connect=("db=10.1.2.3:6543", "extra=127.0.0.1:9000")))
    assert chosen == (Service("db", "10.1.2.3", 6543, 5432),  # the guest's port stays
                      Service("cache", "127.0.0.1", 6379, 6379),
                      Service("extra", "127.0.0.1", 9000, 9000))
    boot = protocol.decode_boot(boot_settings(img, RunOptions()))
    assert boot["connect"] == {"db": ["127.0.0.1", 5432, "127.0.0.1"],
                               "cache": ["127.0.0.1", 6379, "127.0.0.1"]}
    assert boot_settings(image(), RunOptions()) == b""


def test_a_declared_host_name_is_pointed_elsewhere_and_keeps_its_place_in_the_guest() -> None:
    img = image(boot=BootDefaults(48, 1, "", ("https://api.example.test", "db.prod:5432")))
    chosen = services(img, RunOptions(connect=("api.example.test=127.0.0.1:8443",)))
    assert chosen[0] == Service("api.example.test", "127.0.0.1", 8443, 443, "api.example.test")
    boot = protocol.decode_boot(boot_settings(img, RunOptions(connect=(
        "api.example.test=127.0.0.1:8443",))))
    assert boot["connect"] == {"api.example.test": ["127.77.0.1", 443, "api.example.test"],
                               "db.prod": ["127.77.0.2", 5432, "db.prod"]}
    with pytest.raises(ConfigError, match="cannot be added at boot"):
        services(img, RunOptions(connect=("new.example.test=127.0.0.1:1",)))


def test_a_new_service_on_a_port_taken_in_the_guest_is_refused() -> None:
    img = image(boot=BootDefaults(48, 1, "", ("db=127.0.0.1:5432",)))
    for taken in ("other=127.0.0.1:5432", "web=127.0.0.1:8080"):
        with pytest.raises(ConfigError, match="taken inside the guest"):
            services(img, RunOptions(connect=(taken,)))


def test_env_without_a_value_comes_from_kraits_own_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from krait.cli.run import options_from_flags

    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    monkeypatch.delenv("NOT_SET", raising=False)
    options = options_from_flags((), ("DB_PASSWORD", "A=b=c"), None, {})
    assert options.env == {"DB_PASSWORD": "hunter2", "A": "b=c"}
    with pytest.raises(ConfigError, match="NOT_SET is not set"):
        options_from_flags((), ("NOT_SET",), None, {})
