"""What an instance is doing now, derived from what can be observed.

A process id in a record proves nothing after a crash or a reboot (the number may
belong to another program by now), so a process counts as the instance's only if it is
alive *and* its command line names the instance's folder (QEMU's sockets live there,
and the supervisor is given the folder as its argument).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from krait.errors import VmError
from krait.fleet.state import InstanceDir, State, all_instances, serve_dir, serve_record
from krait.names import valid_name
from krait.vmm import qmp
from krait.vmm.libvirt import LibvirtBackend


def process_of(pid: int | None, folder: InstanceDir) -> psutil.Process | None:
    """The process ``pid`` if it is alive and belongs to ``folder``'s instance."""
    if pid is None or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if any(str(folder.path) in arg for arg in proc.cmdline()):
            return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    image: str
    image_digest: str
    state: State
    owner: str
    ports: list[list[int]]
    memory_mib: int  # guest memory
    rss_mb: float | None  # the QEMU process's resident memory on the host
    uptime_s: float | None  # since the current QEMU started
    pid: int | None  # QEMU's
    restarts: int
    restart: str
    backend: str
    host: str  # the libvirt URI; "" for this machine
    exit_status: int | None
    exit_reason: str | None
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def observe(folder: InstanceDir, query_qmp: bool = True) -> InstanceStatus | None:
    """The instance's state now; None if the folder holds no instance record."""
    record = folder.record()
    if record is None:
        return None
    run = folder.run()
    owner = process_of(run.owner_pid, folder) if record.owner == "run" else _alive(run.owner_pid)
    qemu = process_of(run.qemu_pid, folder)
    rss = uptime = None
    domain = LibvirtBackend(record.host).state(run.domain) if run.domain else None
    if domain is not None:  # libvirt's QEMU, perhaps on another host
        state: State = domain if domain == State.PAUSED else (
            State.RUNNING if run.ready else State.BOOTING)
        uptime = round(time.time() - run.started, 1) if run.started else None
    elif qemu is not None:
        with contextlib.suppress(psutil.Error):
            rss = round(qemu.memory_info().rss / 1e6, 1)
            uptime = round(time.time() - qemu.create_time(), 1)
        state = State.RUNNING if run.ready else State.BOOTING
        if query_qmp and folder.qmp_socket.exists():
            with contextlib.suppress(VmError, Exception):
                if qmp.query_status(folder.qmp_socket, timeout=1.0) in (
                        "paused", "postmigrate", "inmigrate", "prelaunch"):
                    state = State.PAUSED
    elif owner is not None:
        state = State.RESTARTING if run.restarts or run.exit_reason else State.BOOTING
    elif run.ended:
        state = State.EXITED
    else:
        state = State.STALE  # the owner died without recording an end: a crash or a reboot
    return InstanceStatus(
        name=record.name, image=record.image, image_digest=record.image_digest, state=state,
        owner=record.owner, ports=record.ports, memory_mib=record.memory, rss_mb=rss,
        uptime_s=uptime, pid=qemu.pid if qemu else None, restarts=run.restarts,
        restart=record.restart, backend=record.backend, host=record.host,
        exit_status=run.exit_status, exit_reason=run.exit_reason,
        path=str(folder.path))


def _alive(pid: int | None) -> psutil.Process | None:
    if pid is None or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and any("krait" in a for a in proc.cmdline()):
            return proc
    except psutil.Error:
        pass
    return None


def clean_orphans() -> list[str]:
    """Remove the folders of instances whose `krait serve` is gone (ending their QEMU if
    it somehow survived), and of stale ones nobody can ask about. Returns their names."""
    removed = []
    for folder in all_instances():
        record = folder.record()
        run = folder.run()
        if record is None:
            # No record: a folder whose creation was interrupted; only if it is old.
            if time.time() - folder.path.stat().st_mtime > 60:
                folder.remove()
                removed.append(folder.name)
            continue
        if record.owner != "serve" or _alive(run.owner_pid) is not None:
            continue
        qemu = process_of(run.qemu_pid, folder)
        if qemu is not None:
            with contextlib.suppress(psutil.Error):
                os.kill(qemu.pid, signal.SIGKILL)
        if run.domain:
            LibvirtBackend(record.host).remove(run.domain)
        folder.remove()
        removed.append(folder.name)
    _clean_serve_records()
    return removed


def _clean_serve_records() -> None:
    """Forget `krait serve`s that died without cleaning up (their record and socket)."""
    for record in serve_dir().glob("*.json"):
        info = serve_record(record.stem) if valid_name(record.stem) else None
        if _alive(info["pid"] if info else None) is None:
            record.with_suffix(".sock").unlink(missing_ok=True)
            record.unlink(missing_ok=True)


def list_statuses(query_qmp: bool = True) -> list[InstanceStatus]:
    out = []
    for folder in all_instances():
        status = observe(folder, query_qmp)
        if status is not None:
            out.append(status)
    return out
