"""krait.run: every child krait starts ends with the block that owns it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from krait.errors import CommandError
from krait.run import run, spawn


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie is gone but for its entry
    except FileNotFoundError:
        return False


def test_an_interrupted_block_ends_the_child_and_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    with (pytest.raises(KeyboardInterrupt),  # as Ctrl-C in the middle of a build
          spawn(["sh", "-c", f"sleep 300 & echo $! > {pids}; sleep 300"]) as proc):
            deadline = time.monotonic() + 10
            while not pids.exists() or not pids.read_text().strip():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            grandchild = int(pids.read_text())
            assert alive(proc.pid) and alive(grandchild)
            raise KeyboardInterrupt
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while alive(grandchild):  # killed with its group; reaped by init in a moment
        assert time.monotonic() < deadline, "the child's own child is still running"
        time.sleep(0.01)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    with spawn(["sh", "-c", "trap '' TERM; echo up; sleep 300"], grace=0.3) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    assert proc.returncode == -9


def test_a_missing_program_is_a_command_error_and_the_environment_is_chosen() -> None:
    with pytest.raises(CommandError) as missing:
        run(["/nonexistent/krait-tool"])
    assert missing.value.returncode == 127
    os.environ["KRAIT_SECRET_TEST"] = "leak"
    try:
        assert "KRAIT_SECRET_TEST" not in run(["env"]).stdout
    finally:
        del os.environ["KRAIT_SECRET_TEST"]
