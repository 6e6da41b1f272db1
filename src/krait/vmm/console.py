"""A VM's serial console as krait reads it: bounded in memory and on disk.

QEMU writes the console to a pipe; krait splits it into lines (none longer than
MAX_LINE, so a guest printing without newlines cannot grow the host's memory), keeps the
last ones for error messages, and appends everything to the instance's console log,
which rotates: past ``max_bytes`` it becomes ``console.log.1`` (replacing the older
one), so a chatty app costs at most twice ``max_bytes`` of disk.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_LINE = 4096
MAX_LOG = 8 << 20


class ConsoleLog:
    def __init__(self, path: Path, max_bytes: int = MAX_LOG) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file = path.open("ab")

    @staticmethod
    def rotated(path: Path) -> Path:
        return path.with_name(path.name + ".1")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._file.close()
            os.replace(self.path, self.rotated(self.path))
            self._file = self.path.open("ab")

    def close(self) -> None:
        self._file.close()


class Lines:
    """Bytes in, whole lines out; a line longer than MAX_LINE is cut into pieces."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return [line.decode(errors="replace").rstrip("\r") for line in lines]

    def rest(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return [rest.decode(errors="replace").rstrip("\r")] if rest else []
