"""QMP, QEMU's machine protocol, over the monitor's unix socket (the ``qemu.qmp`` library).

Callers here are synchronous (the CLI, the QEMU backend's threads): each call connects,
runs its commands and disconnects, so one QMP socket is never held for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from krait.errors import VmError

# qemu.qmp logs every failed connection attempt; they are expected while QEMU starts.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

Command = tuple[str, dict[str, Any] | None]


async def execute_async(path: Path, commands: list[Command], timeout: float = 10.0
                        ) -> list[Any]:
    """Connect to the QMP socket at ``path`` (retrying until ``timeout``), run ``commands``
    in order and return their results."""
    deadline = time.monotonic() + timeout
    client = QMPClient("krait")
    while True:
        try:
            await asyncio.wait_for(client.connect(str(path)), max(0.1, deadline - time.monotonic()))
            break
        except (QMPError, OSError, TimeoutError) as e:
            if time.monotonic() >= deadline:
                raise VmError(f"QMP socket {path} does not answer: {e}") from e
            await asyncio.sleep(0.01)
    try:
        results = []
        for name, args in commands:
            results.append(await asyncio.wait_for(client.execute(name, args), timeout))
        return results
    except (QMPError, TimeoutError) as e:
        raise VmError(f"QMP command failed: {e}") from e
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 2)


def execute(path: Path, commands: list[Command], timeout: float = 10.0) -> list[Any]:
    """Synchronous :func:`execute_async`, safe to call from a thread running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(execute_async(path, commands, timeout))
    out: list[Any] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            out.extend(asyncio.run(execute_async(path, commands, timeout)))
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


def save_state(path: Path, target: Path, resume: bool, timeout: float = 120.0) -> None:
    """Pause the VM, write its whole state to ``target`` (QEMU migration to a file),
    then resume it if asked. The file appears only once it is complete."""
    partial = target.with_name(target.name + ".partial")
    uri = f"exec:cat > {shlex.quote(str(partial))}"
    execute(path, [("stop", None), ("migrate", {"uri": uri})])
    deadline = time.monotonic() + timeout
    while True:
        (info,) = execute(path, [("query-migrate", None)])
        status = info.get("status")
        if status == "completed":
            break
        if status in ("failed", "cancelled") or time.monotonic() > deadline:
            partial.unlink(missing_ok=True)
            raise VmError(f"saving the VM's state failed ({status}): "
                          f"{info.get('error-desc', 'no reason given')}")
        time.sleep(0.01)
    partial.rename(target)
    if resume:
        execute(path, [("cont", None)])


def resume_restored(path: Path, timeout: float = 30.0) -> None:
    """Wait until a VM started with ``-incoming`` has loaded its state, then run it."""
    deadline = time.monotonic() + timeout
    while True:
        status = query_status(path, timeout=max(0.5, deadline - time.monotonic()))
        if status in ("paused", "postmigrate", "prelaunch"):
            break
        if status == "running":
            return
        if status not in ("inmigrate",) or time.monotonic() > deadline:
            raise VmError(f"the VM did not load its snapshot (state {status})")
        time.sleep(0.005)
    execute(path, [("cont", None)])
