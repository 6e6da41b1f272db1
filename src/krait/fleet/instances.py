"""Detached instances: start (``krait run -d``), stop, remove.

A detached instance is its supervisor process (:mod:`krait.fleet.supervisor`) plus the
QEMU it owns, both in sessions of their own, and the instance's folder.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil

from krait.errors import ConfigError, VmError
from krait.fleet.observe import observe, process_of
from krait.fleet.restart import POLICIES
from krait.fleet.state import (
    InstanceDir,
    InstanceRecord,
    State,
    create_instance,
    find_instance,
    new_name,
)
from krait.names import check_name
from krait.run import popen
from krait.vmm.launch import RunOptions, backend_for, prepare


def start_detached(image_path: Path, options: RunOptions, name: str | None = None,
                   restart: str = "no", timeout: float = 30.0) -> InstanceDir:
    """Create the instance's folder and start its supervisor; return once QEMU runs."""
    if restart not in POLICIES:
        raise ConfigError(f"--restart {restart}: expected one of {', '.join(POLICIES)}")
    if name is not None:
        check_name(name)
    image, spec = prepare(image_path, options)  # checks the image before anything starts
    backend = backend_for(image, options)
    name = name or new_name(image.name)
    existing = find_instance(name)
    if existing is not None:
        status = observe(existing, query_qmp=False)
        if status is None or status.state == State.STALE:
            existing.remove()  # left behind by a crash: nothing of it runs any more
    record = InstanceRecord(
        name=name, image=str(image_path.resolve()), image_name=image.name,
        image_digest=image.digest, memory=spec.memory, vcpus=spec.vcpus,
        accel=spec.accel.name, ports=[[p.host, p.guest] for p in spec.ports],
        created=time.time(), owner="run", restart=restart, env=dict(options.env),
        connect=list(options.connect), backend=backend.name,
        host=backend.uri,
        # Absolute: the supervisor runs in another folder.
        volumes=[str(replace(v, path=v.path.resolve())) for v in spec.volumes])
    folder = create_instance(record)
    with folder.supervisor_log.open("ab") as out:
        # A daemon: it outlives this command, and ends with its VM.
        popen([sys.executable, "-m", "krait.fleet.supervisor", str(folder.path)],
              stdout=out.fileno(), stderr=subprocess.STDOUT, daemon=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = folder.run()
        if run.ref or run.ended:
            break
        time.sleep(0.02)
    run = folder.run()
    if run.ended or not run.ref:
        tail = folder.supervisor_log.read_text(errors="replace").strip().splitlines()[-5:]
        raise VmError(f"instance {name} did not start: {run.exit_reason or 'timed out'}",
                      hint="\n".join(tail) or None)
    return folder


def require(name: str) -> InstanceDir:
    folder = find_instance(name)
    if folder is None or folder.record() is None:
        raise ConfigError(f"no instance named {name!r}", hint="`krait ps` lists them")
    return folder


def stop_instance(folder: InstanceDir, grace: float = 10.0) -> str:
    """Stop gracefully (the app gets SIGTERM), then hard after ``grace`` seconds.

    Returns the state the instance ended in.
    """
    record = folder.record()
    run = folder.run()
    if record is not None and record.owner == "serve":
        raise ConfigError(f"{folder.name} belongs to a `krait serve` (pid {run.owner_pid})",
                          hint="stop that serve; it stops its instances")
    supervisor = process_of(run.owner_pid, folder)
    if supervisor is not None:
        folder.stop_request.write_text(f"{grace}\n")
        supervisor.send_signal(signal.SIGTERM)
        with contextlib.suppress(psutil.TimeoutExpired):
            supervisor.wait(grace + 15)
        if supervisor.is_running() and supervisor.status() != psutil.STATUS_ZOMBIE:
            supervisor.kill()
    # Without a supervisor (it crashed), its backend stops the VM.
    ref = folder.run().ref
    if record is not None and ref:
        record.backend_here().stop(ref, grace)
    run = folder.run()
    if not run.ended:
        run.ended = True
        run.ref = None
        run.exit_reason = run.exit_reason or "stopped by krait stop"
        folder.write_run(run)
    status = observe(folder, query_qmp=False)
    return status.state if status else "removed"


def remove_instance(folder: InstanceDir, force: bool = False) -> None:
    status = observe(folder, query_qmp=False)
    if status is not None and status.state not in (State.EXITED, State.STALE):
        if not force:
            raise ConfigError(f"{folder.name} is {status.state}",
                              hint=f"stop it first (`krait stop {folder.name}`), or use -f")
        if status.owner == "serve":
            raise ConfigError(f"{folder.name} belongs to a running `krait serve`")
        stop_instance(folder, grace=0 if status.state != State.RUNNING else 5)
    folder.remove()
