"""Helpers shared by the fleet VM tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


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
