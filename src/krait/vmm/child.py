"""References to VMs that are processes of this machine: QEMU started by krait, or an
app run as a process (the process backend).

A pid in a record proves nothing after a crash or a reboot (the number may belong to
another program by now), so the reference names the process by its pid *and* the time
it started, and the folder its sockets are in. Only the backends that start such
processes read it (:meth:`krait.vmm.base.Backend.status`).
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import psutil

from krait.guest import protocol
from krait.vmm.base import CONTROL_SOCKET, VmStatus

# Start times are floats; the same process reads back the same value to well within this.
_SAME_START = 0.05


def child_ref(pid: int, workdir: Path | None) -> str:
    """The reference of the process ``pid`` (just started), whose sockets are in
    ``workdir``."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = 0.0  # it ended already: the reference names nothing alive
    return json.dumps({"pid": pid, "started": started,
                       "workdir": str(workdir) if workdir else ""})


def _parsed(ref: str) -> tuple[int, float, Path | None] | None:
    try:
        data = json.loads(ref[:4096])
        pid, started, workdir = data["pid"], data["started"], data["workdir"]
    except (ValueError, TypeError, KeyError):
        return None
    if (type(pid) is not int or pid <= 0 or not isinstance(started, int | float)
            or not isinstance(workdir, str)):
        return None
    return pid, float(started), Path(workdir) if workdir else None


def find_child(ref: str) -> psutil.Process | None:
    """The process ``ref`` names, if it still runs (the same process, not its pid's
    next owner)."""
    parsed = _parsed(ref)
    if parsed is None:
        return None
    pid, started, _ = parsed
    try:
        proc = psutil.Process(pid)
        if (abs(proc.create_time() - started) > _SAME_START
                or proc.status() == psutil.STATUS_ZOMBIE):
            return None
        return proc
    except psutil.Error:
        return None


def workdir_of(ref: str) -> Path | None:
    parsed = _parsed(ref)
    return parsed[2] if parsed else None


def child_status(ref: str) -> VmStatus:
    proc = find_child(ref)
    if proc is None:
        return VmStatus.gone()
    rss = started = None
    with contextlib.suppress(psutil.Error):
        rss = round(proc.memory_info().rss / 1e6, 1)
        started = proc.create_time()
    return VmStatus(running=True, pid=proc.pid, rss_mb=rss, started=started)


def stop_child(ref: str, grace: float) -> None:
    """Ask the guest to stop on its control port (QEMU's socket in the workdir), or the
    process itself with SIGTERM where there is none; kill it after ``grace`` seconds."""
    proc = find_child(ref)
    if proc is None:
        return
    workdir = workdir_of(ref)
    control = workdir / CONTROL_SOCKET if workdir else None
    try:
        if control is not None and control.exists():
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(control))
                s.sendall(f"{protocol.STOP}\n".encode())
        else:
            proc.terminate()
    except (OSError, psutil.Error):
        pass
    try:
        proc.wait(grace)
    except psutil.TimeoutExpired:
        kill_child(ref)
    except psutil.Error:
        pass


def kill_child(ref: str) -> None:
    proc = find_child(ref)
    if proc is None:
        return
    with contextlib.suppress(psutil.Error):
        proc.kill()
        proc.wait(5)
