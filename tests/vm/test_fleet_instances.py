"""Detached instances, as a user drives them: krait run -d / ps / logs / stop / rm, the
restart policy, and a stale folder after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from krait.bench.http import first_answer
from krait.vmm.ports import free_port

from .conftest import KRAIT, krait_cli
from .fleet_support import private_state, wait_for

pytestmark = pytest.mark.vm


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Nothing of it may run at the end (and nothing does)."""
    def remove_all(path: Path) -> None:
        for folder in (path / "instances").glob("*"):
            krait_cli("rm", "-f", folder.name)

    with private_state(monkeypatch, timeout=2, clean=remove_all) as path:
        yield path


def ps() -> dict[str, dict[str, Any]]:
    proc = krait_cli("ps", "--json")
    assert proc.returncode == 0, proc.stderr
    return {i["name"]: i for i in json.loads(proc.stdout)}


def test_run_detached_ps_logs_stop_rm(hello_image: Path, state: Path) -> None:
    port = free_port()
    started = krait_cli("run", "-d", "--name", "web", "-p", f"{port}:8080", hello_image)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "web"
    # The command returned, the instance lives on.
    wait_for(lambda: ps()["web"]["state"] == "running", what="web running")
    info = ps()["web"]
    assert info["ports"] == [[port, 8080]]
    assert info["owner"] == "run"
    assert info["rss_mb"] > 10 and info["uptime_s"] >= 0
    status, body = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
    assert status == 200 and body.startswith(b"Hello from a krait unikernel")
    table = krait_cli("ps")
    assert "web" in table.stdout and "running" in table.stdout
    logs = krait_cli("logs", "web")
    assert "hello ready on port 8080" in logs.stdout

    stop = krait_cli("stop", "web")
    assert stop.returncode == 0, stop.stderr
    info = ps()["web"]
    assert info["state"] == "exited" and info["exit_status"] == 0  # graceful: the app's 0
    assert info["pid"] is None
    assert krait_cli("run", "-d", "--name", "web", hello_image).returncode != 0  # name taken
    assert krait_cli("rm", "web").returncode == 0
    assert "web" not in ps()
    assert krait_cli("logs", "web").returncode != 0


def test_restart_policy_and_stale_folder(hello_image: Path, state: Path) -> None:
    assert krait_cli("run", "-d", "--name", "sup", "--restart", "on-failure",
                     hello_image).returncode == 0
    first = wait_for(lambda: ps()["sup"]["state"] == "running" and ps()["sup"]["pid"],
                     what="sup running")
    os.kill(first, signal.SIGKILL)  # the unikernel "crashes"
    info = wait_for(lambda: (i := ps()["sup"])["state"] == "running" and i["pid"] != first
                    and i, what="sup restarted")
    assert info["restarts"] == 1
    assert "restarted" in krait_cli("logs", "sup").stdout  # the earlier run's console stays

    # A crash of the whole host: supervisor and QEMU gone without a word.
    run = json.loads((state / "instances" / "sup" / "run.json").read_text())
    os.kill(run["owner_pid"], signal.SIGKILL)
    os.kill(info["pid"], signal.SIGKILL)
    wait_for(lambda: ps()["sup"]["state"] == "stale", 10, "sup stale")
    # The name is free again: the stale folder is cleaned, not reused.
    assert krait_cli("run", "-d", "--name", "sup", hello_image).returncode == 0
    fresh = ps()["sup"]
    assert fresh["restarts"] == 0 and fresh["restart"] == "no"
    assert krait_cli("stop", "-t", "5", "sup").returncode == 0
    assert krait_cli("rm", "sup").returncode == 0


STUBBORN_APP = """
    import os, signal, time

    def main():
        if os.environ.get("EXIT_AT_ONCE"):
            print("done, exiting 0", flush=True)
            return 0
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # will not stop when asked
        for n in range(1, 10**6):
            print(f"tick {n}", flush=True)
            time.sleep(0.5)
"""


def test_restart_always_hard_stop_and_logs_follow(make_app: Callable[..., Path],
                                                  build: Callable[[Path], Path],
                                                  state: Path) -> None:
    image = build(make_app(STUBBORN_APP))
    # --restart always: an app that exits 0 is started again (on-failure would not).
    assert krait_cli("run", "-d", "--name", "again", "--restart", "always",
                     "-e", "EXIT_AT_ONCE=1", image).returncode == 0
    wait_for(lambda: ps()["again"]["restarts"] >= 2, 120, "two restarts")
    assert ps()["again"]["exit_status"] in (0, None)  # the last run's, or one running
    assert krait_cli("logs", "again").stdout.count("done, exiting 0") >= 2

    # logs -f follows the console as it is written, and ends when the instance does.
    assert krait_cli("run", "-d", "--name", "stubborn", image).returncode == 0
    with subprocess.Popen([*KRAIT, "logs", "-f", "stubborn"], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, text=True) as follow:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(follow.stdout or ()),
                                  daemon=True)
        reader.start()
        try:
            wait_for(lambda: "tick 3\n" in lines, 120, "tick 3 through logs -f")
            # stop -t: the app ignores SIGTERM, so the grace runs out and the VM is ended.
            stopped = krait_cli("stop", "-t", "2", "stubborn")
            assert stopped.returncode == 0, stopped.stderr
            assert follow.wait(30) == 0  # logs -f ends with the instance
        finally:
            if follow.poll() is None:
                follow.kill()
        reader.join(10)
    assert any(line.startswith("krait: t ready") for line in lines)
    info = ps()["stubborn"]
    assert info["state"] == "exited" and info["exit_status"] is None
    assert "stopped" in info["exit_reason"]
    assert krait_cli("stop", "again").returncode == 0


def test_a_crash_reaches_krait_logs_with_its_traceback(make_app: Callable[..., Path],
                                                       build: Callable[[Path], Path],
                                                       state: Path) -> None:
    image = build(make_app("def main():\n    raise ValueError('the app broke')\n"))
    assert krait_cli("run", "-d", "--name", "broken", image).returncode == 0
    wait_for(lambda: ps()["broken"]["state"] == "exited", 120, "the crash")
    logs = krait_cli("logs", "broken").stdout
    assert "Traceback (most recent call last)" in logs
    assert "ValueError: the app broke" in logs
    assert "\x1b[" not in logs  # not a terminal: no colour
    krait_cli("rm", "broken")
