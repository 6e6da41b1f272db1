"""PID 1's fork-and-reap (krait.guest.reaper), on the host: a real fork in a process of
its own (the reaper installs signal handlers, which pytest's process must not get)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from krait.guest.reaper import exit_status


def reaper_script(body: str) -> str:
    """A program that runs ``run_as_child`` with a child whose code is ``body`` and exits
    with the status it returns."""
    return textwrap.dedent("""
        import os, signal, sys, time
        from krait.guest import reaper

        def child():
        {body}
            return 0

        sys.exit(reaper.run_as_child(child))
    """).format(body=textwrap.indent(textwrap.dedent(body), "    "))


def run_reaper(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", reaper_script(body)], capture_output=True,
                          text=True, timeout=30, check=False)


def test_exit_status_is_a_shells() -> None:
    assert exit_status(0) == 0
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGSEGV) == 128 + signal.SIGSEGV
    assert exit_status(signal.SIGKILL | 0x80) == 128 + signal.SIGKILL  # core dumped


@pytest.mark.parametrize(("body", "status"), [
    ("print('returned', flush=True)\nreturn 5", 5),
    ("os._exit(3)", 3),  # skips every clean-up: only a parent can see it
    ("raise SystemExit(7)", 1),  # run_app turns SystemExit into a status; raw, it is a bug
    ("os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
    ("os.kill(os.getpid(), signal.SIGSEGV)", 128 + signal.SIGSEGV),
])
def test_the_childs_end_is_its_status(body: str, status: int) -> None:
    proc = run_reaper(body)
    assert proc.returncode == status, proc.stderr
    if status > 128:
        name = signal.strsignal(status - 128)
        assert f"krait: the app was killed by signal {status - 128} ({name})" in proc.stderr


def test_the_app_leads_a_session_of_its_own() -> None:
    proc = run_reaper("print('sid', os.getsid(0) == os.getpid(), flush=True)")
    assert proc.returncode == 0 and "sid True" in proc.stdout, proc.stderr


def test_a_stop_signal_to_the_parent_reaches_the_app() -> None:
    body = """
        def on_term(signum, frame):
            print("app got SIGTERM", flush=True)
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        time.sleep(60)
        return 9
    """
    proc = subprocess.Popen([sys.executable, "-c", reaper_script(body)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)  # to the parent only
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "app got SIGTERM" in out


def test_orphans_are_reaped_while_the_app_runs() -> None:
    """As PID 1 does for the whole machine, a subreaper adopts the app's orphans: they
    are reaped, not left as zombies, and the app's own status still wins."""
    body = """
        pid = os.fork()
        if pid == 0:  # a daemon's middle process: its child is orphaned at once
            if os.fork() == 0:
                time.sleep(0.2)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(1.5)  # the orphan ends meanwhile; a zombie would still be listed
        parent = os.getppid()
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            print("only the app:", f.read().split() == [str(os.getpid())], flush=True)
        return 4
    """
    # PR_SET_CHILD_SUBREAPER (36): orphans come to this process, as they come to PID 1.
    code = ("import ctypes; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\n"
            "exec(compile(open(0).read(), '<reaper>', 'exec'))")
    proc = subprocess.run([sys.executable, "-c", code], input=reaper_script(body),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 4, proc.stderr
    assert "only the app: True" in proc.stdout, proc.stdout + proc.stderr
