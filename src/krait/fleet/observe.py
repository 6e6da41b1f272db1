"""What an instance is doing now, derived from what can be observed.

Its VM is asked about through its backend, by the reference the owner recorded
(:meth:`krait.vmm.base.Backend.status`). A process id in a record proves nothing after a
crash or a reboot (the number may belong to another program by now), so the owner's
process counts only if it is alive *and* its command line names the instance's folder
(the supervisor is given the folder as its argument).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from krait.errors import KraitError
from krait.fleet.state import (
    InstanceDir,
    InstanceRecord,
    State,
    all_instances,
    serve_dir,
    serve_record,
)
from krait.names import valid_name
from krait.vmm.base import Backend, VmStatus


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
    rss_mb: float | None  # the VM's process's resident memory on this host, if it has one
    uptime_s: float | None  # since the current VM started
    pid: int | None  # the VM's process on this host, if it has one
    restarts: int
    restart: str
    backend: str
    host: str  # where it runs (a libvirt URI); "" for this machine
    where: str  # the backend and host, as a listing says it
    address: str  # the host its forwarded ports are on
    exit_status: int | None
    exit_reason: str | None
    path: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backend(record: InstanceRecord) -> Backend | None:
    """The record's backend; None if this krait cannot make it (a removed backend, the
    libvirt binding missing): its VM is then not seen, and the instance shows stale."""
    try:
        return record.backend_here()
    except KraitError:
        return None


def observe(folder: InstanceDir, query_qmp: bool = True) -> InstanceStatus | None:
    """The instance's state now; None if the folder holds no instance record.
    ``query_qmp``: ask the VM itself whether it is paused (a round trip)."""
    record = folder.record()
    if record is None:
        return None
    run = folder.run()
    owner = process_of(run.owner_pid, folder) if record.owner == "run" else _alive(run.owner_pid)
    backend = _backend(record)
    seen = (backend.status(run.ref, detail=query_qmp) if backend and run.ref
            else VmStatus.gone())
    uptime = None
    if seen.running:
        state = State.PAUSED if seen.paused else State.RUNNING if run.ready else State.BOOTING
        started = seen.started or run.started
        uptime = round(time.time() - started, 1) if started else None
    elif owner is not None:
        state = State.RESTARTING if run.restarts or run.exit_reason else State.BOOTING
    elif run.ended:
        state = State.EXITED
    else:
        state = State.STALE  # the owner died without recording an end: a crash or a reboot
    return InstanceStatus(
        name=record.name, image=record.image, image_digest=record.image_digest, state=state,
        owner=record.owner, ports=record.ports, memory_mib=record.memory, rss_mb=seen.rss_mb,
        uptime_s=uptime, pid=seen.pid, restarts=run.restarts,
        restart=record.restart, backend=record.backend, host=record.host,
        where=backend.label if backend else record.backend,
        address=backend.host_name if backend else "-",
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
        backend = _backend(record)
        if backend is not None and run.ref:
            backend.remove(run.ref)  # it somehow outlived its serve
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
