"""krait.image.erofs and layers: deterministic read-only disks, checked by erofs-utils' own
fsck (which extracts them) and by what the guest would see."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from krait.errors import BuildError
from krait.image.entry import Entry
from krait.image.erofs import build_erofs, listing, runnable
from krait.image.layers import make_layer

pytestmark = pytest.mark.skipif(not shutil.which("mkfs.erofs"), reason="needs erofs-utils")


def sample() -> list[Entry]:
    return [
        Entry.file("/usr/bin/python3.11", b"\x7fELF" + bytes(range(200)), executable=True),
        Entry.symlink("/lib", "usr/lib"),
        Entry.folder("/tmp", 0o1777),
        Entry.file("/krait/app/app.pyc", b"\x00compiled"),
        Entry.file("/etc/empty", b""),
    ]


def extract(image: bytes, where: Path) -> Path:
    disk = where / "disk.erofs"
    disk.write_bytes(image)
    out = where / "out"
    subprocess.run(["fsck.erofs", f"--extract={out}", disk], check=True, capture_output=True)
    return out


def test_what_goes_in_comes_out(tmp_path: Path) -> None:
    out = extract(build_erofs(sample()), tmp_path)
    assert (out / "usr/bin/python3.11").read_bytes() == b"\x7fELF" + bytes(range(200))
    assert stat.S_IMODE((out / "usr/bin/python3.11").stat().st_mode) == 0o755
    assert os.readlink(out / "lib") == "usr/lib"
    assert stat.S_IMODE((out / "tmp").stat().st_mode) == 0o1777
    assert (out / "krait/app/app.pyc").read_bytes() == b"\x00compiled"
    assert (out / "etc/empty").read_bytes() == b""
    assert stat.S_IMODE((out / "etc/empty").stat().st_mode) == 0o644


def test_the_same_entries_give_the_same_bytes() -> None:
    assert build_erofs(sample()) == build_erofs(list(reversed(sample())))


def test_a_device_node_is_refused() -> None:
    with pytest.raises(BuildError, match="only files, folders and symlinks"):
        build_erofs([Entry("/dev/console", stat.S_IFCHR | 0o600)])


def test_a_layer_is_placed_under_its_mount_point(tmp_path: Path) -> None:
    layer = make_layer("app", [Entry.file("/krait/app/app.pyc", b"x"),
                               Entry.file("/krait/app/.krait/config.marshal", b"c")])
    assert layer.mount == "/krait/app" and layer.files == 2
    from krait.image.layers import decompress_to

    disk = io.BytesIO()
    assert decompress_to(io.BytesIO(layer.blob), disk, layer.disk_size) == layer.disk_digest
    with pytest.raises(ValueError, match="more than the 100 bytes"):
        decompress_to(io.BytesIO(layer.blob), io.BytesIO(), 100)
    out = extract(disk.getvalue(), tmp_path)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".krait/config.marshal", "app.pyc"]
    rows = json.loads(layer.listing)
    assert ["/krait/app/app.pyc", stat.S_IFREG | 0o644, 1, "", ""] in rows  # guest paths


def test_what_can_be_run() -> None:
    loader = Entry.file("/usr/lib64/ld-linux-x86-64.so.2", _elf(e_type=3), executable=True)
    program = Entry.file("/usr/bin/python3.11", _elf(e_type=3, interp=True), executable=True)
    library = Entry.file("/usr/lib/libc.so.6", _elf(e_type=3), executable=True)
    script = Entry.file("/init", b"#!/usr/bin/python3.11\n", executable=True)
    data = Entry.file("/x.pyc", b"#!not executable")
    assert [runnable(e) for e in (loader, program, library, script, data)] == [
        "loader", "program", "", "script", ""]
    assert json.loads(listing([script]))[0][-1] == "script"


def _elf(e_type: int, interp: bool = False) -> bytes:
    """A minimal 64-bit ELF header with one program header (PT_INTERP or PT_LOAD)."""
    import struct

    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<H", header, 16, e_type)
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, 3 if interp else 1)
    return bytes(header + phdr)
