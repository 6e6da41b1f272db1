"""The app as a plain host process: the host's Python, the same server, no isolation."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from krait.bench.compare._common import tree_mb
from krait.bench.compare.base import Running, Variant
from krait.bench.compare.payload import LAUNCHER
from krait.bench.compare.surface import surface_of_host, tree_bytes
from krait.image.environment import prepare_python
from krait.run import spawn


class _Process(Running):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def host_pss_mb(self) -> float:
        return tree_mb(self.pid, "pss")

    def guest_used_mb(self, stats: dict[str, object]) -> float | None:
        return round(tree_mb(self.pid), 1)  # no guest: the process's RSS is all there is


class ProcessVariant(Variant):
    name = "process"
    label = "process (host Python)"

    def prepare(self) -> None:
        self.python = prepare_python(self.app).python  # the app's environment
        self.details = {"python": str(self.python),
                        "artifact": "the app and the server file; the host's Python is shared",
                        "guest_memory": "the process tree's RSS (there is no guest)"}

    def artifact_bytes(self) -> int:
        return tree_bytes(self.payload)

    def surface(self) -> dict[str, int | None]:
        return surface_of_host()

    @contextlib.contextmanager
    def started(self, port: int) -> Iterator[Running]:
        with spawn([self.python, self.payload / LAUNCHER], env={"PORT": str(port)},
                   stdout=subprocess.DEVNULL, stderr=None) as proc:
            yield _Process(proc.pid)
