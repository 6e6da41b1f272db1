"""``krait logs NAME [-f]``: an instance's console."""

from __future__ import annotations

import os
import sys
import time
from typing import BinaryIO

import click

from krait.fleet.instances import require
from krait.fleet.observe import observe
from krait.fleet.state import State
from krait.vmm.console import ConsoleLog

DIM, CYAN, RED, RESET = b"\x1b[2m", b"\x1b[36m", b"\x1b[31m", b"\x1b[0m"


class Colours:
    """Whole console lines, coloured for a terminal: krait's own lines cyan, the guest
    kernel's dim, a Python traceback red (from its first line to the exception's)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._partial = b""
        self._in_traceback = False

    def _colour(self, line: bytes) -> bytes | None:
        if line.startswith(b"Traceback (most recent call last):"):
            self._in_traceback = True
        if self._in_traceback:
            # The traceback ends with the first line that is not indented: the exception.
            if not line.startswith((b" ", b"Traceback")):
                self._in_traceback = False
            return RED
        if line.startswith((b"krait:", b"--- krait:")):
            return CYAN
        if line.startswith(b"[") and b"]" in line[:16]:
            return DIM
        return None

    def write(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            colour = self._colour(line)
            self.out.write(colour + line + RESET + b"\n" if colour else line + b"\n")

    def flush(self) -> None:
        self.out.flush()

    def finish(self) -> None:
        """The last line, even without its newline (the console ended mid-line)."""
        if self._partial:
            self.out.write(self._partial)
            self._partial = b""
        self.out.flush()


@click.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until it ends "
              "(on a terminal, krait's lines, the kernel's and tracebacks in colour; "
              "NO_COLOR=1 for none).")
def command(name: str, follow: bool) -> None:
    """Show the console of instance NAME (earlier runs first, if it was restarted; the
    log keeps the last 8-16 MiB)."""
    folder = require(name)
    out: BinaryIO | Colours = sys.stdout.buffer
    if sys.stdout.isatty() and "NO_COLOR" not in os.environ:
        out = Colours(sys.stdout.buffer)
    current, rotated = folder.console_log, ConsoleLog.rotated(folder.console_log)
    if rotated.exists():
        out.write(rotated.read_bytes())
    position = 0
    while True:
        if current.exists():
            if current.stat().st_size < position:  # rotated: finish the old part first
                with rotated.open("rb") as f:
                    f.seek(position)
                    out.write(f.read())
                position = 0
            with current.open("rb") as f:
                f.seek(position)
                chunk = f.read()
                position += len(chunk)
                out.write(chunk)
            out.flush()
        if not follow:
            break
        status = observe(folder, query_qmp=False)
        if status is None or status.state in (State.EXITED, State.STALE):
            break
        time.sleep(0.2)
    if isinstance(out, Colours):
        out.finish()
