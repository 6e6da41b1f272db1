"""No child outlives the krait that started it (krait.watchdog): killed with SIGKILL,
krait runs no clean-up of its own, so only the watchdog can end its children."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from krait.watchdog import start_time, watch

# A stand-in for krait: starts two children with krait.run.popen, one of them a daemon
# (as `krait run -d` starts its supervisor), prints their pids and waits to be killed.
OWNER = """
import sys, time
from krait.run import popen
tied = popen(["sleep", "600"], stdout=None, stderr=None)
daemon = popen(["sleep", "600"], stdout=None, stderr=None, daemon=True)
print(tied.pid, daemon.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def kill_after() -> Iterator[list[int]]:
    """Pids this test started outside krait.run, killed however the test ends."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_krait_leaves_no_child_running_but_its_daemon(kill_after: list[int]) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    kill_after.append(owner.pid)
    assert owner.stdout is not None
    tied, daemon = map(int, owner.stdout.readline().split())
    kill_after += [tied, daemon]
    assert not _gone(tied, 0.5), "the child ended while its owner still ran"
    owner.kill()
    owner.wait()
    assert _gone(tied, 10), "the child outlived the krait that started it"
    assert not _gone(daemon, 1), "the daemon ended with the command that started it"


def test_a_pid_that_belongs_to_another_process_now_is_left_alone(
        kill_after: list[int]) -> None:
    other = subprocess.Popen(["sleep", "600"])
    kill_after.append(other.pid)
    started = start_time(other.pid)
    assert started is not None
    # The watchdog was told of a process with this pid that started at another time.
    watch([f"{other.pid} {int(started) - 1}\n", "not a line\n"])
    assert other.poll() is None
    watch([f"{other.pid} {started}\n"])
    assert other.wait(10) == -signal.SIGTERM


def test_start_time_reads_past_a_command_name_with_spaces_and_parentheses(
        tmp_path: Path) -> None:
    program = tmp_path / "x) (y z"  # the command name the kernel shows is the file's
    shutil.copy("/bin/sleep", program)
    odd = subprocess.Popen([program, "600"])
    try:
        assert psutil.Process(odd.pid).name() == program.name
        ticks = start_time(odd.pid)
        expected = psutil.Process(odd.pid).create_time() - psutil.boot_time()
        assert ticks is not None
        assert abs(int(ticks) / os.sysconf("SC_CLK_TCK") - expected) < 1
    finally:
        odd.kill()
        odd.wait()
    assert start_time(odd.pid) is None
