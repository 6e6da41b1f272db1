"""One file system object of a guest layer, as krait builds it in memory."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """A file, folder or symlink at an absolute guest path."""

    path: str  # absolute guest path, e.g. "/usr/bin/python3.11"
    mode: int  # including the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""  # file contents, or the target of a symlink

    @classmethod
    def file(cls, path: str, data: bytes, executable: bool = False) -> Entry:
        return cls(path, stat.S_IFREG | (0o755 if executable else 0o644), data)

    @classmethod
    def folder(cls, path: str, mode: int = 0o755) -> Entry:
        return cls(path, stat.S_IFDIR | mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, stat.S_IFLNK | 0o777, target.encode())


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Entries plus a folder entry for every parent not listed, sorted by path."""
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in by_path:
            by_path[parent] = Entry.folder(parent)
            parent = parent.rsplit("/", 1)[0]
    return [by_path[p] for p in sorted(by_path)]
