"""The app as a plain host process: the host's Python, the same server, no isolation."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import psutil

from krait.bench.compare.base import Running, Variant
from krait.bench.compare.payload import LAUNCHER
from krait.bench.compare.surface import surface_of_host, tree_bytes
from krait.image.environment import prepare_python
from krait.run import spawn


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants, in MB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 1e6


class _Process(Running):
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def host_rss_mb(self) -> float:
        return tree_rss_mb(self.pid)

    def guest_used_mb(self, stats: dict[str, object]) -> float | None:
        return round(tree_rss_mb(self.pid), 1)  # no guest: the process is all there is


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
