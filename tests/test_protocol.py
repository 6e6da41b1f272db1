"""krait.guest.protocol: boot settings on the kernel command line."""

from __future__ import annotations

from typing import Any

import pytest

from krait.guest.protocol import BOOT_PARAM, MARKER, decode_boot, encode_boot, parse_status

VALUES: dict[str, Any] = {
    "env": {"GREETING": "héllo wörld ☃", "URL": "postgres://u:p@h/db?a=b&c==d", "EMPTY": ""},
    "cmd": "a=b=c",
    "memory": 64,
    "vcpus": 2,
    "flags": [True, False, None],
    "emoji": "🐍 krait",
}


def test_round_trip_with_unicode_and_equals() -> None:
    arg = encode_boot(VALUES)
    cmdline = f"console=ttyS0 {MARKER} {arg} quiet panic=-1"
    assert decode_boot(cmdline) == VALUES


def test_encoded_value_is_one_plain_kernel_argument() -> None:
    arg = encode_boot(VALUES)
    key, sep, value = arg.partition("=")
    assert (key, sep) == (BOOT_PARAM, "=")
    assert value
    assert arg.isascii()
    assert not any(c.isspace() for c in arg)
    assert "=" not in value  # padding stripped: the value has no '=' for the kernel to split
    assert '"' not in arg


@pytest.mark.parametrize("values", [{}, {"a": ""}, {"a": "x"}, {"ab": "xy"}, {"abc": "xyz1"}])
def test_round_trip_all_padding_lengths(values: dict[str, Any]) -> None:
    assert decode_boot(encode_boot(values)) == values


def test_encoding_is_deterministic() -> None:
    reordered = dict(reversed(list(VALUES.items())))
    assert encode_boot(reordered) == encode_boot(VALUES)


def test_decode_without_the_param() -> None:
    assert decode_boot("console=ttyS0 quiet krait.guest=1") == {}
    assert decode_boot("") == {}


def test_decode_ignores_similar_names() -> None:
    arg = encode_boot({"a": 1})
    assert decode_boot(arg.replace(BOOT_PARAM, BOOT_PARAM + "x", 1)) == {}
    assert decode_boot(f"x{arg}") == {}


def test_decode_takes_the_first_occurrence() -> None:
    first, second = encode_boot({"n": 1}), encode_boot({"n": 2})
    assert decode_boot(f"{first} {second}") == {"n": 1}


@pytest.mark.parametrize(("arg", "status"), [
    ("0", 0), ("1", 1), ("255", 255), ("256", None), ("-1", None), ("", None),
    ("\uff11", None), ("1e3", None), ("0x1", None), (" 1", None), ("99999999999999999999", None),
])
def test_exit_status_is_0_to_255_in_decimal_or_nothing(arg: str, status: int | None) -> None:
    assert parse_status(arg) == status
