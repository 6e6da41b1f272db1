"""A deterministic newc ("070701") cpio writer, the format Linux unpacks as initramfs.

Hand-written because no maintained library writes newc with the control we need:
entries sorted by path, uid/gid 0, one fixed mtime, inode numbers assigned in
order, so the same files always give the same bytes. Parent folders are added
before their contents; the kernel unpacks several archives written one after
another (our image layers) into one root file system.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
# 2000-01-01: files need *a* time; any fixed one makes the archive reproducible.
MTIME = 946684800


@dataclass(frozen=True)
class Entry:
    """One file system object in the guest: a file, folder, symlink or device node."""

    path: str  # absolute guest path, e.g. "/usr/bin/python3.11"
    mode: int  # including the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # major, minor for device nodes

    @classmethod
    def file(cls, path: str, data: bytes, executable: bool = False) -> Entry:
        return cls(path, stat.S_IFREG | (0o755 if executable else 0o644), data)

    @classmethod
    def folder(cls, path: str, mode: int = 0o755) -> Entry:
        return cls(path, stat.S_IFDIR | mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def chardev(cls, path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
        return cls(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, size: int, rdev: tuple[int, int], namesize: int):
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return MAGIC + b"".join(b"%08x" % f for f in fields)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries plus a folder entry for every parent not listed, sorted by path."""
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in by_path:
            by_path[parent] = Entry.folder(parent)
            parent = parent.rsplit("/", 1)[0]
    return [by_path[p] for p in sorted(by_path)]


def write_cpio(entries: Iterable[Entry]) -> bytes:
    """The archive for ``entries`` (parents added, sorted, with the trailer)."""
    out = bytearray()
    for ino, entry in enumerate(with_parents(entries), start=1):
        name = entry.path.lstrip("/").encode() + b"\0"
        data = b"" if stat.S_ISDIR(entry.mode) or stat.S_ISCHR(entry.mode) else entry.data
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        head = _header(ino, entry.mode, nlink, len(data), entry.rdev, len(name))
        out += head + name + _pad(len(head) + len(name)) + data + _pad(len(data))
    name = TRAILER.encode() + b"\0"
    head = _header(0, 0, 1, 0, (0, 0), len(name))
    out += head + name + _pad(len(head) + len(name))
    return bytes(out)


def read_cpio(data: bytes) -> list[Entry]:
    """Parse a newc archive (used by ``krait inspect`` and the tests)."""
    entries, pos = [], 0
    while pos < len(data):
        if data[pos:pos + 6] != MAGIC:
            rest = data[pos:]
            pos += len(rest) - len(rest.lstrip(b"\0"))  # padding between archives
            if pos >= len(data):
                break
            if data[pos:pos + 6] != MAGIC:
                raise ValueError(f"not a newc cpio archive at offset {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = f[1], f[6], (f[9], f[10]), f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-size % 4)
        if name == TRAILER:
            continue
        entries.append(Entry("/" + name, mode, body, rdev))
    return entries
