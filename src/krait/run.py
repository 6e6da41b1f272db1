"""The one way krait starts other programs.

Strict defaults, as in mkosi's ``run()``: an argument list (never a shell string),
``check=True``, stdin closed, the environment chosen rather than inherited, and the
command logged under ``--debug``. A long-running child is owned by :func:`spawn`, a
context manager that ends it and everything it started (its process group) with
SIGTERM, then SIGKILL, however the block ends: an interrupted build or benchmark leaves
nothing running. Two children outlive a block on purpose, and say so by using
:func:`popen`: QEMU (its :class:`~krait.vmm.qemu.QemuVm` ends it) and the supervisor of
``krait run -d`` (a daemon). Every child of :func:`popen` but that daemon is also told
to the :mod:`krait.watchdog`, which ends it should krait die without doing so itself
(SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from krait.errors import CommandError

log = logging.getLogger("krait")

# What a child may see of our environment; everything else is dropped.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and return it; raise CommandError if it fails."""
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=child_env(env),
            input=input.decode() if input is not None else None,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except FileNotFoundError as e:
        raise CommandError(args, 127, f"{args[0]}: not found") from e
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, (proc.stdout or "") + (proc.stderr or ""))
    return proc


def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    pass_fds: tuple[int, ...] = (),
    daemon: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running command in its own session; the caller owns it and must end
    it (see :func:`terminate`). Use :func:`spawn` unless the child outlives a block. It
    ends with this process (by the watchdog) unless it is a ``daemon``."""
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s &", shlex.join(args))
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            start_new_session=True,  # our Ctrl-C is ours to handle; terminate() ends it
        )
    except FileNotFoundError as e:
        raise CommandError(args, 127, f"{args[0]}: not found") from e
    if not daemon:
        _watchdog.tie(proc.pid)
    return proc


class _Watchdog:
    """This process's :mod:`krait.watchdog`, started with the first child it is told of."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pipe: IO[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._owner = 0  # the pid that started it: a forked copy of krait needs its own

    def tie(self, pid: int) -> None:
        from krait.watchdog import start_time

        started = start_time(pid)  # not reaped yet (we have not waited): still ours
        if started is None:
            return
        with self._lock:
            try:
                if self._pipe is None or self._owner != os.getpid():
                    self._pipe, self._owner = self._start(), os.getpid()
                self._pipe.write(f"{pid} {started}\n")
                self._pipe.flush()
            except OSError as e:
                # Only a krait that is killed outright would leave this child running.
                log.warning("krait: no watchdog for pid %d (%s)", pid, e)

    def _start(self) -> IO[str]:
        import krait.watchdog

        # Kept (never waited for): it ends on its own when we do, and init reaps it.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", krait.watchdog.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=child_env(), text=True,
            # Not in krait's process group: a signal to that group is not for it.
            start_new_session=True)
        assert self._proc.stdin is not None
        return self._proc.stdin


_watchdog = _Watchdog()


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """End a child we started and its process group: SIGTERM, wait ``grace`` seconds,
    then SIGKILL."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The child leads its own session (popen), so its group id is its pid. Called only
    # before we reap it, so that id cannot belong to anyone else yet.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    grace: float = 5.0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Own a long-running child for the length of a ``with`` block, ending it (and its
    process group) however the block ends."""
    proc = popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    try:
        yield proc
    finally:
        terminate(proc, grace)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
