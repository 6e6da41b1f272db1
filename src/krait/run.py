"""The one way krait starts other programs.

Strict defaults, as in mkosi's ``run()``: an argument list (never a shell string),
``check=True``, stdin closed, the environment chosen rather than inherited, and the
command logged under ``--debug``. Long-running children are owned by a context
manager that ends them with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

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


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running command; the caller owns it (see :func:`terminate`)."""
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s &", shlex.join(args))
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=new_session,
        )
    except FileNotFoundError as e:
        raise CommandError(args, 127, f"{args[0]}: not found") from e


def terminate(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """End a child we started: SIGTERM, wait ``grace`` seconds, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def start(
    argv: Sequence[str | os.PathLike[str]], **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    """Own a child for the length of a ``with`` block, ending it however the block ends."""
    proc = spawn(argv, **kwargs)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        terminate(proc)
