"""Instances on disk: one folder per instance under the state directory.

A folder holds what the instance *should* be (``instance.json``, written once when it is
created), what its owner last saw (``run.json``, written only by the owner: the
supervisor of a ``krait run -d`` or the ``krait serve`` that started it), the console
log and QEMU's sockets. What is true *now* is observed, never read from these files:
see :mod:`krait.fleet.observe`.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from krait.errors import ConfigError
from krait.names import check_name, name_from, valid_name
from krait.paths import is_real_dir, krait_dir, read_bounded, state_dir, write_atomically
from krait.typed import ShapeError, from_json
from krait.vmm.backends import get_backend
from krait.vmm.base import CONTROL_SOCKET, QMP_SOCKET, Backend


class State(StrEnum):
    """What an instance is doing: one vocabulary for the gateway (booting, running,
    paused, stopping) and for `krait ps` (which also sees the ones between runs)."""

    BOOTING = "booting"
    RUNNING = "running"  # ready: it answers
    PAUSED = "paused"  # its CPUs stopped, its memory kept (resumes in milliseconds)
    STOPPING = "stopping"
    RESTARTING = "restarting"  # a detached instance waiting to be started again
    EXITED = "exited"
    STALE = "stale"  # its owner died without recording an end: a crash or a reboot


# The largest record krait reads back (instance.json, run.json, a serve's): krait writes
# them, but a damaged or planted one must not cost more than this to read.
MAX_RECORD = 1 << 20
# A unix socket path must fit in sun_path (108 bytes, NUL included).
MAX_SOCKET_PATH = 107


@dataclass
class InstanceRecord:
    """What an instance is: written once, when its folder is created."""

    name: str
    image: str  # absolute path of the .krait file
    image_name: str
    image_digest: str
    memory: int  # MiB
    vcpus: int
    accel: str
    ports: list[list[int]]  # [host, guest] pairs, host side on 127.0.0.1
    created: float  # wall clock
    owner: str = "run"  # "run" (a supervisor) or "serve" (a `krait serve`)
    restart: str = "no"  # no | on-failure | always
    env: dict[str, str] = field(default_factory=dict)
    connect: list[str] = field(default_factory=list)  # --connect NAME=HOST:PORT
    volumes: list[str] = field(default_factory=list)  # --volume FILE:TARGET[:ro]
    backend: str = "qemu"  # what runs it (vmm.backends)
    host: str = ""  # the host it runs at (a libvirt URI); "" for this machine

    def backend_here(self) -> Backend:
        """The backend that runs it, from the registry."""
        return get_backend(self.backend, self.host or None)


@dataclass
class RunRecord:
    """What the owner last saw; written only by the owner."""

    owner_pid: int | None = None
    # The current VM, as its backend (the record's) finds it again: opaque (Vm.ref).
    ref: str | None = None
    started: float | None = None  # wall clock of the current VM's start
    ready: float | None = None  # wall clock when the guest said ready
    restarts: int = 0
    ended: bool = False  # the owner saw the instance end and will not restart it
    exit_status: int | None = None
    exit_reason: str | None = None
    snapshot: str | None = None  # woke from this snapshot instead of booting


def instances_dir() -> Path:
    return krait_dir(state_dir(), "instances", private=True)


def serve_dir() -> Path:
    """Where each running `krait serve` says where it listens (NAME.json, NAME.sock)."""
    return krait_dir(state_dir(), "serve", private=True)


def serve_record(name: str) -> dict[str, Any] | None:
    """What `krait serve` ``name`` recorded as it started (its pid, where it listens, its
    control socket), if that record is there and whole."""
    data = _read_json(serve_dir() / f"{check_name(name, 'serve')}.json")
    pid = data.get("pid")
    # A pid of 0 or -1 would name process groups to signal, not a serve.
    if type(pid) is not int or pid <= 0 or not isinstance(data.get("control"), str):
        return None
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_bounded(path, MAX_RECORD))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class InstanceDir:
    """One instance's folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def console_log(self) -> Path:
        return self.path / "console.log"

    @property
    def control_socket(self) -> Path:
        return self.path / CONTROL_SOCKET

    @property
    def qmp_socket(self) -> Path:
        return self.path / QMP_SOCKET

    @property
    def supervisor_log(self) -> Path:
        return self.path / "supervisor.log"

    @property
    def stop_request(self) -> Path:
        return self.path / "stop-request"

    def record(self) -> InstanceRecord | None:
        """What the instance is; None for a folder whose record is missing, damaged or of
        another folder (half-created, or not krait's: treated as stale)."""
        try:
            # Fields a later krait added are ignored, as they were before.
            record = from_json(InstanceRecord, _read_json(self.path / "instance.json"),
                               strict=False)
        except ShapeError:
            return None
        return record if record.name == self.name else None

    def run(self) -> RunRecord:
        """What the owner last saw; a damaged record says nothing (no owner, no VM: the
        instance shows as stale), so one bad file never breaks `krait ps` for the rest."""
        try:
            return from_json(RunRecord, _read_json(self.path / "run.json"), strict=False)
        except ShapeError:
            return RunRecord()

    def write_record(self, record: InstanceRecord) -> None:
        _write_json(self.path / "instance.json", asdict(record))

    def write_run(self, run: RunRecord) -> None:
        _write_json(self.path / "run.json", asdict(run))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def new_name(base: str) -> str:
    return f"{name_from(base)}-{secrets.token_hex(3)}"


def find_instance(name: str) -> InstanceDir | None:
    """Instance ``name``'s folder, if there is one (a name that is not valid is an error:
    it would be a path)."""
    path = instances_dir() / check_name(name)
    return InstanceDir(path) if is_real_dir(path) else None


def all_instances() -> list[InstanceDir]:
    return [InstanceDir(p) for p in sorted(instances_dir().iterdir())
            if is_real_dir(p) and valid_name(p.name)]


def create_instance(record: InstanceRecord, run: RunRecord | None = None) -> InstanceDir:
    """Make the folder; the name must be free (callers clean stale folders first).

    ``run`` (its owner) is written before the record: a folder with a record but no live
    owner is an orphan to any `krait ps` that looks in between."""
    check_name(record.name)
    path = instances_dir() / record.name
    if len(str(path / CONTROL_SOCKET)) > MAX_SOCKET_PATH:
        raise ConfigError(f"the state directory path is too long for QEMU's sockets: {path}",
                          hint="set KRAIT_STATE to a shorter folder")
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        raise ConfigError(f"an instance named {record.name!r} already exists",
                          hint=f"remove it with `krait rm {record.name}` or pick another "
                          "--name") from None
    folder = InstanceDir(path)
    if run is not None:
        folder.write_run(run)
    folder.write_record(record)
    return folder
