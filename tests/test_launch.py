"""The kernel command line and the initramfs choice, from an image manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from krait.guest import protocol
from krait.image.archive import Image
from krait.vmm.accel import Accel
from krait.vmm.launch import RunOptions, initrd_compressed, kernel_cmdline

TCG = Accel("tcg", "test")
KVM = Accel("kvm", "test")


def image(cpio_mib: float = 13.0, cmdline: str = "", name: str = "hello") -> Image:
    manifest: dict[str, Any] = {
        "name": name,
        "boot": {"memory": 48, "vcpus": 1, "cmdline": cmdline},
        "layers": [{"cpio_size": int(cpio_mib * 2**20)}],
    }
    return Image(Path("x.krait"), manifest, "0" * 64, {})


def test_marker_console_and_network_are_always_there() -> None:
    args = kernel_cmdline(image(), RunOptions(), TCG)
    assert protocol.MARKER in args
    assert "console=ttyS0" in args
    assert "reboot=t" in args and "panic=-1" in args
    assert any(a.startswith("ip=10.0.2.15::10.0.2.2:255.255.255.0:hello:eth0") for a in args)


def test_apic_timer_calibration_is_skipped_only_under_tcg() -> None:
    assert "noapictimer" in kernel_cmdline(image(), RunOptions(), TCG)
    assert "noapictimer" not in kernel_cmdline(image(), RunOptions(), KVM)


def test_boot_env_travels_only_when_given() -> None:
    plain = kernel_cmdline(image(), RunOptions(), TCG)
    assert not any(a.startswith(protocol.BOOT_PARAM + "=") for a in plain)
    args = kernel_cmdline(image(), RunOptions(env={"A": "b c"}), TCG)
    assert protocol.decode_boot(" ".join(args)) == {"env": {"A": "b c"}}


def test_user_extras_come_last_so_they_win() -> None:
    args = kernel_cmdline(image(cmdline="loglevel=4"), RunOptions(cmdline="loglevel=7"), TCG)
    assert args[-2:] == ("loglevel=4", "loglevel=7")
    assert args.index("quiet") < args.index("loglevel=7")


def test_hostname_is_sanitised() -> None:
    args = kernel_cmdline(image(name="my app_1"), RunOptions(), TCG)
    assert any(":my-app-1:eth0:" in a for a in args)


def test_initramfs_is_compressed_only_when_memory_is_short() -> None:
    assert initrd_compressed(image(cpio_mib=13.0), 40)
    assert not initrd_compressed(image(cpio_mib=13.0), 48)
    assert not initrd_compressed(image(cpio_mib=13.0), 256)
    assert initrd_compressed(image(cpio_mib=60.0), 128)
