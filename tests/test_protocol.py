"""krait.guest.protocol: boot settings on the kernel command line."""

from __future__ import annotations

from typing import Any

import pytest

from krait.guest.protocol import (
    BOOT_PARAM,
    MARKER,
    SECTOR,
    boot_device,
    decode_boot,
    encode_boot,
    parse_status,
)

VALUES: dict[str, Any] = {
    "env": {"GREETING": "héllo wörld ☃", "URL": "postgres://u:p@h/db?a=b&c==d", "EMPTY": ""},
    "cmd": "a=b=c",
    "memory": 64,
    "vcpus": 2,
    "flags": [True, False, None],
    "emoji": "🐍 krait",
}


def test_round_trip_with_unicode_and_equals() -> None:
    assert decode_boot(encode_boot(VALUES)) == VALUES


def test_the_settings_are_whole_sectors_of_a_disk() -> None:
    for values in ({}, {"a": "x"}, VALUES, {"a": "x" * 600}):
        data = encode_boot(values)
        assert len(data) % SECTOR == 0 and data
        assert decode_boot(data) == values


def test_encoding_is_deterministic() -> None:
    reordered = dict(reversed(list(VALUES.items())))
    assert encode_boot(reordered) == encode_boot(VALUES)


def test_the_boot_disk_is_named_by_the_first_krait_boot_argument() -> None:
    assert boot_device(f"console=ttyS0 {MARKER} {BOOT_PARAM}=/dev/vdd quiet") == "/dev/vdd"
    assert boot_device(f"{BOOT_PARAM}=/dev/vdc {BOOT_PARAM}=/dev/vdd") == "/dev/vdc"
    assert boot_device("console=ttyS0 quiet krait.guest=1") is None
    assert boot_device(f"{BOOT_PARAM}x=/dev/vdd x{BOOT_PARAM}=/dev/vdd") is None



@pytest.mark.parametrize(("arg", "status"), [
    ("0", 0), ("1", 1), ("255", 255), ("256", None), ("-1", None), ("", None),
    ("\uff11", None), ("1e3", None), ("0x1", None), (" 1", None), ("99999999999999999999", None),
])
def test_exit_status_is_0_to_255_in_decimal_or_nothing(arg: str, status: int | None) -> None:
    assert parse_status(arg) == status
