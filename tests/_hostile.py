"""Running krait against hostile input as a user would: the real command line in a
process of its own, its exit status, its output and its peak memory (RSS).

``as_nobody=True`` runs it as uid/gid 65534 (``setpriv``, util-linux: on every Debian), for
the tests where a second local user is the point; the tests run as root here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

NOBODY = 65534
# What krait may use reading any image or registry (issue #20).
MAX_RSS_MB = 256


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # the krait process's own high-water mark
    argv: tuple[str, ...] = ()

    @property
    def error(self) -> str:
        """What krait said went wrong (and its hint), on one line."""
        return " ".join(self.stderr.split())


# Runs krait and reports its peak RSS. A child's high-water mark starts from its parent's
# at the fork (Linux keeps it across exec), and this test process may be hundreds of MB:
# a small interpreter in between makes krait's own figure its own.
_MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code if code >= 0 else 128 - code)
"""


def krait(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
          as_nobody: bool = False, timeout: float = 120, cwd: Path | None = None) -> Ran:
    """Run ``krait ARGS...``; ``env`` is added to this process's environment."""
    argv = [sys.executable, "-m", "krait.cli", *map(str, args)]
    if as_nobody:
        if os.geteuid() != 0:
            pytest.skip("needs root to run krait as a second user")
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile() as rss:
        proc = subprocess.Popen([sys.executable, "-c", _MEASURE, rss.name, *argv], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})}, cwd=cwd)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        err.seek(0)
        peak_kib = int(rss.read() or 0)
        return Ran(proc.returncode, out.read().decode(errors="replace"),
                   err.read().decode(errors="replace"), peak_kib / 1024, tuple(map(str, args)))


def refused(ran: Ran, *words: str) -> None:
    """krait said no as it should: exit 1, krait's own error naming ``words``, no
    internal error and no traceback."""
    assert ran.returncode == 1, (ran.returncode, ran.stderr[-2000:])
    assert ran.stderr.startswith("error:"), ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr and "internal error" not in ran.stderr
    for word in words:
        assert word in ran.error, (word, ran.error)


def tree(folder: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Everything under ``folder`` (not following links): mode, owner and content, to
    check that nothing there changed."""
    out: dict[str, tuple[int, int, bytes | str | None]] = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        content: bytes | str | None = None
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        out[str(path.relative_to(folder))] = (st.st_mode, st.st_uid, content)
    return out


def within_memory(ran: Ran, case: str = "") -> None:
    """krait's peak RSS was under MAX_RSS_MB (printed: `pytest -s ... | grep 'peak RSS'`)."""
    print(f"peak RSS {ran.peak_rss_mb:6.1f} MB  krait {ran.argv[0]} {case}")
    assert ran.peak_rss_mb < MAX_RSS_MB, f"{ran.peak_rss_mb:.0f} MB"
