"""PID 1 outlives the app: the app runs in a child process, and PID 1 waits and reaps.

Linux panics when PID 1 ends ("Attempted to kill init"), and an app that *is* PID 1 can
end in ways no Python code of krait's sees: ``os._exit(n)`` (batch jobs and watchdogs
use it to skip clean-up), a fatal signal, the OOM killer. So PID 1 forks and the app
runs in the child, in a session of its own (as a service manager starts a service);
PID 1 waits for it, and meanwhile reaps every orphan the kernel hands it (a daemon's
grandchildren), so none stays a zombie. The app's end is reported as a shell reports a
command's: n for ``exit(n)``, 128 + N for a death by signal N.
"""

from __future__ import annotations

# Every import here is paid for at each boot, under emulation (see init).
import _signal
import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

# Signals PID 1 passes on to the app: the kernel never kills PID 1 with them, and
# "stop" means the app's graceful stop, wherever it comes from.
FORWARDED = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


def exit_status(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal's number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is one more import at each boot)
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass  # a closed or broken console: nothing more to say on it


def run_as_child(run: Callable[[], int]) -> int:
    """Fork; the child calls ``run`` and ends with the status it returns. Wait for the
    child, reaping any other process that ends meanwhile, and return its exit status."""
    # The objects made so far belong to PID 1 and stay: moved out of the collector's
    # sight, so the child's collections do not write to (and copy) their pages.
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setsid()
            status = run()
        finally:
            _flush()
            os._exit(status & 0xFF)

    def forward(signum: int, frame: object) -> None:
        os.kill(pid, signum)

    for signum in FORWARDED:
        _signal.signal(signum, forward)
    while True:
        try:
            done, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while the app is ours to wait for
            return 1
        if done == pid:
            break
    if os.WIFSIGNALED(wait_status):
        signum = os.WTERMSIG(wait_status)
        print(f"krait: the app was killed by signal {signum} "
              f"({_signal.strsignal(signum) or 'unknown'})", file=sys.stderr, flush=True)
    return exit_status(wait_status)
