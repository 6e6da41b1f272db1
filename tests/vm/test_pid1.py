"""PID 1 outlives the app: however the app's process ends, the job ends with its status,
reported on the control port like any exit, and the guest kernel never panics. One
image, told at each boot (--env) how to end."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel

from .conftest import ctrl_c, krait_cli, krait_running

pytestmark = pytest.mark.vm

APP = """
    import os, signal, sys, time

    def main():
        how = os.environ["HOW"]
        print("app", os.getpid(), "parent", os.getppid(), flush=True)
        if how == "exit":
            print("leaving with os._exit(3)", flush=True)
            os._exit(3)  # no atexit handlers, no flushing: only a parent sees this
        if how in ("SIGSEGV", "SIGKILL"):
            os.kill(os.getpid(), getattr(signal, how))
        if how == "orphan":
            middle = os.fork()
            if middle == 0:  # a daemon's double fork: the grandchild is orphaned
                if os.fork() == 0:
                    time.sleep(0.5)
                    os._exit(0)
                os._exit(0)
            os.waitpid(middle, 0)
            time.sleep(3)  # the orphan ends meanwhile: PID 1 adopted it, and reaps it
            children = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                with open(f"/proc/{pid}/stat") as f:
                    state, ppid = f.read().rpartition(")")[2].split()[:2]
                if ppid == "1":
                    children.append((pid, state))
            print("children of PID 1:", children, flush=True)
            return 0
        if how == "stop":
            def graceful(signum, frame):
                print("graceful stop on", signal.Signals(signum).name, flush=True)
                sys.exit(0)

            signal.signal(signal.SIGTERM, graceful)
            print("waiting for a stop", flush=True)
            while True:
                time.sleep(1)
        return 9
"""

PANIC = ("Kernel panic", "Attempted to kill init")


@pytest.fixture(scope="module")
def ending_image(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ending") / "ending"
    folder.mkdir()
    (folder / "app.py").write_text(textwrap.dedent(APP))
    (folder / "krait.toml").write_text('name = "ending"\nentry = "app:main"\nkind = "main"\n')
    return build_image(load_app(folder), kernel).path


def run_how(image: Path, how: str) -> tuple[int, str]:
    proc = krait_cli("run", image, "--env", f"HOW={how}", timeout=120)
    out = proc.stdout + proc.stderr
    assert not any(p in out for p in PANIC), out
    return proc.returncode, out


def test_os_exit_is_the_jobs_status_not_a_kernel_panic(ending_image: Path,
                                                      no_leftover_qemu: None) -> None:
    status, out = run_how(ending_image, "exit")
    assert status == 3, out
    assert "leaving with os._exit(3)" in out
    assert "parent 1" in out  # the app is PID 1's child


@pytest.mark.parametrize("name", ["SIGSEGV", "SIGKILL"])
def test_a_fatal_signal_is_128_plus_its_number(ending_image: Path, name: str,
                                               no_leftover_qemu: None) -> None:
    signum = getattr(signal, name)
    status, out = run_how(ending_image, name)
    assert status == 128 + signum, out
    assert f"krait: the app was killed by signal {signum} ({signal.strsignal(signum)})" in out


def test_pid_1_reaps_the_apps_orphans(ending_image: Path, no_leftover_qemu: None) -> None:
    status, out = run_how(ending_image, "orphan")
    assert status == 0, out
    app = next(line.split()[1] for line in out.splitlines() if line.startswith("app "))
    # Only the app is left: the orphan was reaped, not kept as a zombie.
    assert f"children of PID 1: [('{app}', 'R')]" in out, out


def test_ctrl_c_is_the_apps_own_graceful_stop(ending_image: Path, no_leftover_qemu: None,
                                              ) -> None:
    with krait_running("run", ending_image, "--env", "HOW=stop") as proc:
        assert proc.stdout is not None
        wait_for_line(proc.stdout.readline, "waiting for a stop", time.monotonic() + 90)
        out, err = ctrl_c(proc)
    assert proc.returncode == 0, out + err
    assert "graceful stop on SIGTERM" in out


def wait_for_line(readline: Callable[[], str], text: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        line = readline()
        if not line:
            break
        if text in line:
            return
    pytest.fail(f"never printed {text!r}")
