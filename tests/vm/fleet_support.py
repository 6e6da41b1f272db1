"""Helpers shared by the fleet VM tests."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest


def processes_of(state: Path) -> list[int]:
    """Processes whose command line names a folder of this state directory: QEMU (its
    sockets live there) and supervisors. Precise where the shared no_leftover_qemu
    fixture is not: other runs' VMs on the same machine do not count."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(state) in a for a in p.info["cmdline"] or [])]


def assert_nothing_runs(state: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (left := processes_of(state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"processes of this test's instances still run: {left}"


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def private_state(monkeypatch: pytest.MonkeyPatch, timeout: float = 10,
                  clean: Callable[[Path], None] = lambda _: None) -> Iterator[Path]:
    """A KRAIT_STATE of the test's own, under /tmp (short: QEMU's sockets live in it, and
    a socket path has 107 bytes at most); nothing of it may run at the end. ``clean``
    ends what was left, after that check, before the folder goes."""
    path = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))
    monkeypatch.setenv("KRAIT_STATE", str(path))
    try:
        yield path
        assert_nothing_runs(path, timeout)
    finally:
        clean(path)
        shutil.rmtree(path, ignore_errors=True)
