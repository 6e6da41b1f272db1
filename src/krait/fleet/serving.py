"""A `krait serve` as a child process, for the benchmarks and tests that measure or check
it from the outside: started, waited for until it listens, and stopped (SIGTERM: it stops
its instances; after a grace period killed) however the block ends.

    with serving(image, port, log, "--idle", "2s") as serve:
        urllib.request.urlopen(serve.url("/"))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krait.errors import VmError
from krait.fleet.serve import control_request
from krait.run import spawn, terminate

KRAIT = [sys.executable, "-m", "krait.cli"]


@dataclass
class ServeChild:
    """A running `krait serve`: its process, where it listens, its log."""

    proc: subprocess.Popen[bytes]
    port: int
    name: str
    log: Path

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def text(self) -> str:
        """What it has logged so far."""
        return self.log.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        """What it says of itself on its control socket (stats, instances)."""
        return asyncio.run(control_request(self.name, {"op": "status"}))

    def stop(self, grace: float = 60.0) -> int:
        """Ctrl-C, as a user stops it; its exit status. One that does not stop within
        ``grace`` seconds is killed, and that is an error."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                terminate(self.proc, 5)
                raise VmError(f"krait serve did not stop in {grace:g}s:\n{self.text()}"
                              ) from None
        return self.proc.returncode


@contextlib.contextmanager
def serving(image: Path, port: int, log: Path, *args: str, name: str | None = None,
            env: dict[str, str] | None = None, start_timeout: float = 60.0,
            grace: float = 60.0) -> Iterator[ServeChild]:
    """`krait serve IMAGE --port PORT --name NAME ARGS`, its output in ``log``, once it
    listens; stopped with SIGTERM when the block ends (killed after ``grace`` seconds)."""
    name = name or f"serve-{port}"
    argv = [*KRAIT, "serve", str(image), "--port", str(port), "--name", name, *args]
    # krait's own settings (its state and cache folders) reach it; ``env`` adds to them.
    ours = {k: v for k, v in os.environ.items() if k.startswith("KRAIT_")}
    with log.open("wb") as out, spawn(argv, grace=grace, stdout=out.fileno(),
                                      stderr=subprocess.STDOUT,
                                      env={**ours, **(env or {})}) as proc:
        child = ServeChild(proc, port, name, log)
        deadline = time.monotonic() + start_timeout
        while b"serving" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise VmError(f"krait serve did not start:\n{child.text()}")
            time.sleep(0.05)
        yield child
