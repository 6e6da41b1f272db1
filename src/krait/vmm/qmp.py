"""QMP, QEMU's machine protocol, over the monitor's unix socket (the ``qemu.qmp`` library).

Callers here are synchronous (the CLI, the QEMU backend's threads): each call connects,
runs its commands and disconnects, so one QMP socket is never held for long. asyncio and
qemu.qmp are imported by the first call, not with this module: `krait run` reaches for
them only once its VM is up, and importing them first would delay QEMU's start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from krait.errors import VmError
from krait.paths import atomic_file

# qemu.qmp logs every failed connection attempt; they are expected while QEMU starts.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

Command = tuple[str, dict[str, Any] | None]


async def execute_async(path: Path, commands: list[Command], timeout: float = 10.0,
                        fd: int | None = None) -> list[Any]:
    """Connect to the QMP socket at ``path`` (retrying until ``timeout``), run ``commands``
    in order and return their results. ``fd`` is handed to QEMU first (SCM_RIGHTS), for a
    ``getfd`` among the commands."""
    import asyncio

    from qemu.qmp import QMPClient, QMPError

    deadline = time.monotonic() + timeout
    client = QMPClient("krait")
    while True:
        try:
            await asyncio.wait_for(client.connect(str(path)), max(0.1, deadline - time.monotonic()))
            break
        except (QMPError, OSError, TimeoutError) as e:
            if time.monotonic() >= deadline:
                raise VmError(f"QMP socket {path} does not answer: {e}") from e
            await asyncio.sleep(0.002)
    try:
        if fd is not None:
            client.send_fd_scm(fd)
        results = []
        for name, args in commands:
            results.append(await asyncio.wait_for(client.execute(name, args), timeout))
        return results
    except (QMPError, TimeoutError) as e:
        raise VmError(f"QMP command failed: {e}") from e
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 2)


def warm_up() -> None:
    """Import what a QMP call needs, ahead of the first one (in a thread while a VM
    boots: its ports are forwarded over QMP the moment it is ready)."""
    import asyncio  # noqa: F401

    import qemu.qmp  # noqa: F401


def execute(path: Path, commands: list[Command], timeout: float = 10.0,
            fd: int | None = None) -> list[Any]:
    """Synchronous :func:`execute_async`, safe to call from a thread running an event loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(execute_async(path, commands, timeout, fd))
    out: list[Any] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            out.extend(asyncio.run(execute_async(path, commands, timeout, fd)))
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if error:
        raise error[0]
    return out


def query_status(path: Path, timeout: float = 2.0) -> str:
    """QEMU's run state: running, paused, inmigrate, postmigrate, ..."""
    (status,) = execute(path, [("query-status", None)], timeout)
    return str(status["status"])


# Guest RAM lives in a file (RamFile): a snapshot holds only the devices' state.
_IGNORE_SHARED = ("migrate-set-capabilities",
                  {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})


def save_state(path: Path, target: Path, timeout: float = 60.0) -> None:
    """Pause the VM and write its device state to ``target`` (its RAM is in its shared
    RAM file already). The VM stays paused. The file appears only once complete, 0600."""
    with atomic_file(target, 0o600) as fd:
        execute(path, [_IGNORE_SHARED, ("stop", None), ("getfd", {"fdname": "state"}),
                       ("migrate", {"uri": "fd:state"})], fd=fd)
        deadline = time.monotonic() + timeout
        while True:
            (info,) = execute(path, [("query-migrate", None)])
            status = info.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise VmError(f"saving the VM's state failed ({status}): "
                              f"{info.get('error-desc', 'no reason given')}")
            time.sleep(0.002)
        os.fsync(fd)


def load_state(path: Path, source: Path, timeout: float = 30.0) -> None:
    """Load a saved device state into a VM started with -incoming defer, and run it."""
    fd = os.open(source, os.O_RDONLY)
    try:
        execute(path, [_IGNORE_SHARED, ("getfd", {"fdname": "state"}),
                       ("migrate-incoming", {"uri": "fd:state"})], timeout, fd=fd)
        deadline = time.monotonic() + timeout
        while True:
            status = query_status(path, timeout=max(0.5, deadline - time.monotonic()))
            if status != "inmigrate":
                break
            if time.monotonic() > deadline:
                raise VmError(f"the VM did not load its snapshot in {timeout:g}s")
            time.sleep(0.002)
        if status not in ("paused", "postmigrate", "prelaunch"):
            raise VmError(f"the VM did not load its snapshot (state {status})")
        execute(path, [("cont", None)])
    finally:
        os.close(fd)


def add_forward(path: Path, netdev: str, rule: str) -> None:
    """Forward a host port into the guest (``rule`` as -netdev user's hostfwd= takes it);
    QEMU has no QMP command for it, only the human monitor's, which answers errors as
    text."""
    (answer,) = execute(path, [("human-monitor-command",
                                {"command-line": f"hostfwd_add {netdev} {rule}"})])
    if str(answer).strip():
        raise VmError(f"QEMU could not forward {rule}: {str(answer).strip()[:200]}")


def pause(path: Path) -> None:
    """Stop the guest's CPUs (QEMU keeps running; nothing runs inside)."""
    execute(path, [("stop", None)])


def resume(path: Path) -> None:
    execute(path, [("cont", None)])
