"""Layers as erofs file systems: read-only disks the guest mounts, nothing held in its RAM.

erofs because the guest reads it without decompressing (CPU is what emulation is short
of) and pages it in only as the app touches it; the ``.krait`` file stores each image
zstd-compressed, so it stays as small as the old cpio layers. mkfs.erofs (Debian's
erofs-utils) builds it from a staging folder: every file owned by root, one fixed
timestamp and UUID, entries in name order, so the same files always give the same bytes
(checked: staging folders on ext4 and tmpfs, written in different orders, give one digest).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import tempfile
from pathlib import Path

from krait.errors import BuildError
from krait.image.entry import Entry, with_parents
from krait.run import run

MKFS = "mkfs.erofs"
# Any fixed values: the image must not depend on when or where it was made.
_UUID = "6b726169-7400-4000-8000-000000000000"  # "krait"
_TIMESTAMP = "946684800"  # 2000-01-01


def find_mkfs() -> str:
    path = shutil.which(MKFS)
    if path is None:
        raise BuildError(f"{MKFS} is not installed (krait's image layers are erofs disks)",
                         hint="install it with `apt-get install erofs-utils` (or `make deps`)")
    return path


def build_erofs(entries: list[Entry]) -> bytes:
    """The erofs image holding ``entries`` (parent folders are added as needed)."""
    mkfs = find_mkfs()
    with tempfile.TemporaryDirectory(prefix="krait-erofs-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for e in with_parents(entries):
            path = root / e.path.lstrip("/")
            if stat.S_ISDIR(e.mode):
                path.mkdir(exist_ok=True)
            elif stat.S_ISLNK(e.mode):
                path.symlink_to(e.data.decode())
            elif stat.S_ISREG(e.mode):
                path.write_bytes(e.data)
            else:
                raise BuildError(f"{e.path}: only files, folders and symlinks go into a layer")
            if not stat.S_ISLNK(e.mode):
                os.chmod(path, stat.S_IMODE(e.mode))
        os.chmod(root, 0o755)
        out = Path(tmp) / "layer.erofs"
        run([mkfs, "--quiet", "--all-root", "-x-1", f"-T{_TIMESTAMP}", f"-U{_UUID}", out, root])
        return out.read_bytes()


def listing(entries: list[Entry]) -> bytes:
    """What a layer holds, for `krait inspect`: [path, mode, size, link target, what runs]
    sorted by path (see :func:`runnable`)."""
    rows = [[e.path, e.mode, len(e.data) if stat.S_ISREG(e.mode) else 0,
             e.data.decode() if stat.S_ISLNK(e.mode) else "", runnable(e)]
            for e in with_parents(entries)]
    return json.dumps(rows, separators=(",", ":")).encode()


def runnable(entry: Entry) -> str:
    """What the kernel (or the dynamic loader) could run of this file: "script" (#!),
    "program" (an ELF executable), "loader" (the dynamic loader: it runs any ELF file it
    is given) or "" (libraries, data)."""
    data = entry.data
    if not stat.S_ISREG(entry.mode) or not entry.mode & 0o111:
        return ""
    if data.startswith(b"#!"):
        return "script"
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2:  # 64-bit ELF only
        return ""
    e_type, = struct.unpack_from("<H", data, 16)
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    types = [struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0]
             for i in range(e_phnum) if e_phoff + (i + 1) * e_phentsize <= len(data)]
    if e_type == _ET_EXEC or (e_type == _ET_DYN and _PT_INTERP in types):
        return "program"
    if e_type == _ET_DYN and ("/ld-linux" in entry.path or "/ld64.so" in entry.path):
        return "loader"
    return ""


_ET_EXEC, _ET_DYN, _PT_INTERP = 2, 3, 3
