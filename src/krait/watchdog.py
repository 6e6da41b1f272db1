"""Ends what a krait process started when that process ends, however it ends.

krait ends its VMs itself (QemuVm.stop, the fleet's drivers, spawn()), but a krait that
is killed with SIGKILL, or crashes in C, runs none of that: its QEMUs would run on as
orphans, holding ports, memory and CPU. The kernel's own tie (PR_SET_PDEATHSIG) does not
hold here: QEMU's -runas clears it when it changes user, and it fires when the *thread*
that started the child ends, not the process (the fleet starts VMs from worker threads).

So each krait process that starts children starts one watchdog first: this file, run by
path with ``python -I -S`` (the standard library only, nothing of krait's). krait tells it
each child's pid and start time on a pipe that only krait holds open. When krait ends
(the kernel closes the pipe), the watchdog sends SIGTERM to each child still running (its
process group: a process-backend app may have children of its own), waits a little,
sends SIGKILL to what is left, and ends.

A child is named by its pid *and* its start time (field 22 of /proc/PID/stat): a pid
whose process ended is not signalled again after the kernel gives it to another program.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable

# How long children have to end on SIGTERM before SIGKILL (QEMU ends at once on it).
GRACE = 3.0


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name (the state first); none if
    the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
    except OSError:
        return []
    # The command name (field 2) is in parentheses and may hold spaces or ")": split
    # after its last ")".
    return stat[stat.rfind(b")") + 2:].split()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    fields = _stat(pid)
    return fields[19].decode() if len(fields) > 19 else None


def _alive(children: dict[int, str]) -> dict[int, str]:
    """Those still running (not ended, not a zombie) that are the processes we were told
    of, not a later owner of their pid."""
    alive = {}
    for pid, started in children.items():
        fields = _stat(pid)
        if len(fields) > 19 and fields[19].decode() == started and fields[0] not in (b"Z", b"X"):
            alive[pid] = started
    return alive


def _signal(children: dict[int, str], sig: int) -> None:
    for pid in _alive(children):
        for send in (os.killpg, os.kill):  # its group if it leads one, else itself
            try:
                send(pid, sig)
                break
            except ProcessLookupError:
                continue
            except PermissionError:
                break


def watch(commands: Iterable[str]) -> None:
    """Read "PID START" lines until the pipe closes; then end those children."""
    children: dict[int, str] = {}
    for line in commands:
        try:
            pid, started = line.split()
            children[int(pid)] = started
        except ValueError:
            continue
        if len(children) > 256:  # forget those that ended, now and then
            children = _alive(children)
    if not _alive(children):
        return
    _signal(children, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal(children, signal.SIGKILL)


if __name__ == "__main__":
    # Signals meant for krait's terminal (Ctrl-C) are not for this one: it ends when
    # krait does, after krait has had its chance to end its children gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch(sys.stdin)
