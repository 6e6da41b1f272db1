"""The manifest is parsed into types and checked field by field: nothing an image says
reaches a host path, a command line or a terminal unless it is what krait writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from krait.errors import ImageError
from krait.image.archive import open_image
from krait.image.manifest import MAX_MANIFEST, Manifest
from krait.typed import ShapeError, from_json

from ._manifests import crafted, manifest

WHERE = Path("x.krait")


def test_what_krait_writes_reads_back_the_same() -> None:
    m = manifest()
    assert Manifest.from_json(m.to_json(), WHERE) == m


def edit(data: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value


HOSTILE: list[tuple[str, object]] = [
    # Finding 5: fields that became host paths, tar member names, the kernel command line.
    ("layers.0.format", "erofs/../../../../X/pwned"), ("layers.1.name", "../.."),
    ("layers.1.name", "packages"), ("layers.0.member", "../../etc/passwd"),
    ("layers.0.listing", "manifest.json"), ("layers.1.mount", "/etc"),
    ("kernel.format", "elf/../../x"), ("kernel.member", "layers/base.erofs.zst"),
    ("kernel.kind", "disk"), ("layers.0.sha256", "../" * 21 + "x"),
    ("layers.0.unpacked_sha256", "A" * 64), ("layers.0.size", -1),
    ("layers.0.unpacked_size", 1 << 40), ("layers.0.size", True), ("layers.0.size", 1.5),
    ("layers.0.files", "1"),
    # Finding 8: shapes that ended in internal errors.
    ("settings", {}), ("settings", []), ("interpreter", None), ("interpreter", {"path": 1}),
    ("interpreter", {"path": "python", "version": "3"}), ("boot", None),
    ("interpreter.path", "/bin/sh"),
    ("boot.memory", "48"), ("boot.memory", 10**9), ("boot.vcpus", 0),
    ("boot.connect", ["db"]), ("boot.backend", "../x"), ("memory", {"heap_mib": "1"}),
    ("memory.heap_mib", -4), ("modules", "app"), ("modules", ["app", None]),
    ("modules", ["os/../../x"]), ("layers", {}), ("layers", []), ("kernel", None),
    ("dependencies.packages", {"flask": 3}), ("dependencies.lock_sha256", "x"),
    ("kernel_identity", {"version": "6.1"}), ("krait", 0), ("unknown", 1),
    # Text that reaches a terminal or the kernel command line.
    ("boot.cmdline", "quiet\ninit=/bin/sh"), ("boot.cmdline", "x" * 3000),
    ("kernel_identity.version", "6.1\x1b]0;pwned\x07"), ("modules", ["app\x1b[2J"]),
    ("dependencies.packages", {"flask\x1b[31m": "3"}), ("interpreter.path", "/usr/\x00x"),
    # Settings go through the settings table.
    ("settings.entry", "app:app; rm -rf /"), ("settings.kind", "cgi"),
    ("settings.ports", ["http"]), ("settings.unknown", 1), ("settings.env", {"A B": "x"}),
    ("settings.volumes", ["/etc"]), ("settings.name", "../x"),
]


@pytest.mark.parametrize(("path", "value"), HOSTILE, ids=[f"{p}={v!r}"[:60] for p, v in HOSTILE])
def test_a_field_krait_would_not_write_is_refused(path: str, value: object) -> None:
    data = json.loads(manifest().to_json())
    edit(data, path, value)
    with pytest.raises(ImageError, match=r"x\.krait: ") as e:
        Manifest.from_json(json.dumps(data).encode(), WHERE)
    assert len(e.value.message) < 400


@pytest.mark.parametrize("change", [
    lambda d: d["layers"].append(dict(d["layers"][1])),  # the same layer twice
    lambda d: d["layers"].pop(0),  # no root
    lambda d: d.pop("settings"),
])
def test_layers_are_each_once_and_there_is_a_root(change: Callable[[dict[str, Any]], object]
                                                  ) -> None:
    data = json.loads(manifest().to_json())
    change(data)
    with pytest.raises(ImageError):
        Manifest.from_json(json.dumps(data).encode(), WHERE)


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000, b"{" * 50_000, b"\xff\xfe", b"null", b"[]", b"7",
    b'{"format": 2, "name": "x"}', b" " * (MAX_MANIFEST + 1)])
def test_not_a_manifest_at_all(raw: bytes) -> None:
    with pytest.raises(ImageError):
        Manifest.from_json(raw, WHERE)


def test_a_crafted_image_with_a_path_for_a_format_is_refused_when_opened(tmp_path: Path) -> None:
    path = crafted(tmp_path / "evil.krait",
                   change=lambda d: d["layers"][0].update(format="erofs/../../../../X/pwned"))
    with pytest.raises(ImageError, match="not one krait writes"):
        open_image(path)
    assert open_image(crafted(tmp_path / "fine.krait")).name == "hello"


def test_typed_reading_names_the_field() -> None:
    with pytest.raises(ShapeError, match=r"Manifest\.boot\.vcpus is not a whole number"):
        data = json.loads(manifest().to_json())
        data["memory"] = {"heap_mib": 4, "mapped_mib": 4}
        data["boot"]["vcpus"] = "1"
        from_json(Manifest, data)


def test_module_names_as_the_standard_library_has_them() -> None:
    """sysconfig imports _sysconfigdata__x86_64-linux-gnu by a computed name: a file's
    name, with its '-', is a module the trace records."""
    m = manifest()
    data = json.loads(m.to_json())
    data["modules"] = ["_sysconfigdata__x86_64-linux-gnu", "email.mime.text"]
    assert Manifest.from_json(json.dumps(data).encode(), WHERE).modules == tuple(
        data["modules"])
    for bad in ("os/../../x", "-x", "a..b", "a.-"):
        data["modules"] = [bad]
        with pytest.raises(ImageError):
            Manifest.from_json(json.dumps(data).encode(), WHERE)
