"""The supervisor of one detached instance: ``python -m krait.fleet.supervisor FOLDER``.

``krait run -d`` starts it in its own session, so it outlives the command. It boots the
instance's QEMU (console to a file in the folder), holds the control port (readiness,
exit status), records what it sees in ``run.json``, and applies the restart policy. On
SIGTERM it stops the guest gracefully (the app gets SIGTERM), then hard after the grace
period that ``krait stop`` wrote into ``stop-request``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from krait.errors import KraitError
from krait.fleet.restart import Backoff, restart_delay
from krait.fleet.state import InstanceDir, InstanceRecord, RunRecord
from krait.image.archive import open_image
from krait.vmm.base import Vm, VmResult
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward

log = logging.getLogger("krait.supervisor")
DEFAULT_GRACE = 10.0


class Supervisor:
    def __init__(self, folder: InstanceDir, record: InstanceRecord,
                 backoff: Backoff | None = None) -> None:
        self.folder = folder
        self.record = record
        self.backoff = backoff or Backoff()
        self.run = RunRecord(owner_pid=os.getpid())
        self.vm: Vm | None = None
        self.stopping = False
        self.stop_deadline: float | None = None

    def save(self, **changes: Any) -> None:
        self.run = replace(self.run, **changes)
        self.folder.write_run(self.run)

    def request_stop(self, signum: int = 0, frame: Any = None) -> None:
        if self.stopping:
            return
        self.stopping = True
        grace = DEFAULT_GRACE
        with contextlib.suppress(OSError, ValueError):
            grace = float(self.folder.stop_request.read_text().strip())
        self.stop_deadline = time.monotonic() + grace
        log.info("stop requested (grace %.1fs)", grace)
        if self.vm is not None:
            self.vm.request_stop()

    def boot(self) -> Vm:
        console = self.folder.console_log
        if console.exists() and console.stat().st_size:
            with console.open("ab") as out:  # each run appends to the one (rotating) log
                out.write(b"--- krait: restarted ---\n")
        image = open_image(Path(self.record.image))
        if image.digest != self.record.image_digest:
            raise KraitError(f"{self.record.image} changed since the instance was created")
        options = RunOptions(
            ports=tuple(PortForward(h, g) for h, g in self.record.ports),
            memory=self.record.memory, vcpus=self.record.vcpus, env=self.record.env,
            connect=tuple(self.record.connect), volumes=tuple(self.record.volumes),
            accel=self.record.accel,
            workdir=self.folder.path, console_log=console)
        _, spec = prepare(Path(self.record.image), options, image=image)
        backend = self.record.backend_here()
        # A monitor for a backend that can pause (`krait ps` asks whether it is paused).
        return backend.start(spec.with_qemu(qmp=True) if backend.snapshots else spec)

    def watch(self, vm: Vm) -> VmResult:
        """Until the VM ends: note readiness, and enforce the stop deadline."""
        while True:
            if self.run.ready is None and vm.wait_ready(0.01):
                self.save(ready=time.time())
            result = vm.wait(0.1)
            if result is not None:
                return result
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                log.info("grace period over: stopping the VM hard")
                vm.kill()

    def main(self) -> int:
        failures = 0
        self.save()
        while not self.stopping:
            try:
                vm = self.boot()
            except KraitError as e:
                self.save(ended=True, exit_status=None, exit_reason=f"could not start: {e}")
                return 1
            self.vm = vm
            started = time.monotonic()
            self.save(ref=vm.ref, started=time.time(), ready=None, exit_status=None,
                      exit_reason=None)
            if self.stopping:  # a stop raced with the boot
                vm.request_stop()
            result = self.watch(vm)
            self.vm = None
            log.info("VM ended: %s", result.reason)
            if time.monotonic() - started > self.backoff.healthy_after:
                failures = 0
            delay = None if self.stopping else restart_delay(
                self.record.restart, result.exit_status, failures, self.backoff)
            self.save(ref=None, exit_status=result.exit_status,
                      exit_reason=result.reason, ended=delay is None)
            if delay is None:
                break
            failures += 1
            log.info("restarting in %.1fs", delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                self.save(ended=True)
                break
            self.save(restarts=self.run.restarts + 1)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    folder = InstanceDir(Path(args[0]))
    record = folder.record()
    if record is None:
        log.error("%s holds no instance record", folder.path)
        return 2
    supervisor = Supervisor(folder, record)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, supervisor.request_stop)
    return supervisor.main()


if __name__ == "__main__":
    sys.exit(main())
