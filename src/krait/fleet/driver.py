"""What the gateway asks of instances: boot one (ready when it returns), stop one, is it
alive. :class:`QemuDriver` does it with real VMs (and snapshot wake); tests use a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from krait.errors import KraitError
from krait.fleet import snapshot
from krait.fleet.state import InstanceDir, InstanceRecord, RunRecord, create_instance
from krait.image.archive import Image, open_image
from krait.vmm.base import VmSpec
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend, QemuVm, free_port

log = logging.getLogger("krait.fleet")


class BootFailed(Exception):
    """An instance did not become ready; ``reason`` is one line for the log and client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ImageRef:
    """An image the gateway serves; a replace makes a new one with a higher generation."""

    path: Path
    generation: int
    name: str = ""
    digest: str = ""
    image: Any = None  # the opened krait Image, for QemuDriver

    @classmethod
    def open(cls, path: Path, generation: int) -> ImageRef:
        image = open_image(path)
        return cls(path.resolve(), generation, image.name, image.digest, image)


@dataclass
class Handle:
    """A ready instance: where to connect, plus whatever the driver needs to stop it."""

    id: str
    address: tuple[str, int]
    woke_from_snapshot: bool = False
    boot_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Driver(ABC):
    @abstractmethod
    async def boot(self, image: ImageRef, instance_id: str) -> Handle:
        """Start an instance and return once it is ready; raise :class:`BootFailed`."""

    @abstractmethod
    async def stop(self, handle: Handle) -> None:
        """Stop gracefully, then hard; return once nothing of it runs."""

    @abstractmethod
    def alive(self, handle: Handle) -> bool:
        """Is the instance still running (cheap: called often)?"""

    async def close(self) -> None:
        """Release what the driver holds (all instances are stopped by then)."""
        return None

    def kill_all(self) -> None:
        """End every instance now, without grace (a second Ctrl-C)."""
        return None



class QemuDriver(Driver):
    """Instances are QEMU VMs with a host port krait picks, visible in `krait ps`."""

    def __init__(self, options: RunOptions, use_snapshots: bool = True,
                 boot_timeout: float = 60.0, stop_grace: float = 5.0) -> None:
        self.options = options
        self.use_snapshots = use_snapshots
        self.boot_timeout = boot_timeout
        self.stop_grace = stop_grace
        self.backend = QemuBackend()
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="krait-vm")
        # Every VM started and not yet stopped, whatever happened to the task that
        # started it (a cancelled boot must not leave a VM behind): close() ends them.
        self._vms: dict[int, tuple[QemuVm, InstanceDir]] = {}
        self._lock = threading.Lock()

    def _start_vm(self, spec: VmSpec, folder: InstanceDir, snap: Path | None) -> QemuVm:
        vm = (self.backend.restore(spec, snap, self.boot_timeout) if snap is not None
              else self.backend.start(spec))
        with self._lock:
            self._vms[vm.pid] = (vm, folder)
        return vm

    def _forget(self, vm: QemuVm) -> None:
        with self._lock:
            self._vms.pop(vm.pid, None)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _spec(self, image: ImageRef, folder: InstanceDir, port: int) -> VmSpec:
        img: Image = image.image
        guest_port = img.manifest.first_port
        options = replace(self.options, ports=(PortForward(port, guest_port),),
                          workdir=folder.path, console_log=folder.console_log)
        _, spec = prepare(image.path, options, image=img)
        return replace(spec, qmp=True)

    async def boot(self, image: ImageRef, instance_id: str) -> Handle:
        started = time.monotonic()
        port = free_port()
        try:
            img: Image = image.image
            record = InstanceRecord(
                name=instance_id, image=str(image.path), image_name=image.name,
                image_digest=image.digest, memory=0, vcpus=0, accel="", ports=[],
                created=time.time(), owner="serve", env=dict(self.options.env))
            folder = create_instance(record)
            spec = self._spec(image, folder, port)
            record.memory, record.vcpus, record.accel = spec.memory, spec.vcpus, spec.accel.name
            record.ports = [[port, spec.ports[0].guest]]
            folder.write_record(record)
            run = RunRecord(owner_pid=os.getpid(), started=time.time())
            folder.write_run(run)
        except KraitError as e:
            raise BootFailed(e.message) from e
        snap = snapshot.path_for(img, spec) if self.use_snapshots else None
        vm: QemuVm | None = None
        woke = False
        if snap is not None and snap.exists():
            try:
                vm = await self._call(self._start_vm, spec, folder, snap)
                woke = True
            except KraitError as e:
                log.warning("%s: waking from %s failed (%s); booting instead",
                            instance_id, snap.name, e.message)
                snap.unlink(missing_ok=True)
        if vm is None:
            try:
                vm = await self._call(self._start_vm, spec, folder, None)
            except KraitError as e:
                folder.remove()
                raise BootFailed(e.message) from e
        assert vm is not None
        run.qemu_pid = vm.pid
        folder.write_run(run)
        if not woke:
            ok = await self._call(vm.wait_ready, self.boot_timeout)
            if not ok:
                vm.kill()
                result = await self._call(vm.wait)
                self._forget(vm)
                tail = [line for line in result.console_tail.splitlines() if line.strip()][-3:]
                folder.remove()
                raise BootFailed(result.reason + (": " + " | ".join(tail) if tail else ""))
            if snap is not None:
                try:
                    seconds = await self._call(snapshot.save, vm, snap)
                    log.info("%s: saved a snapshot for later wakes (%.2fs, %s)",
                             instance_id, seconds, snap.name)
                except KraitError as e:
                    log.warning("%s: could not save a snapshot: %s", instance_id, e.message)
        run.ready = time.time()
        run.snapshot = str(snap) if woke else None
        folder.write_run(run)
        return Handle(instance_id, ("127.0.0.1", port), woke, time.monotonic() - started,
                      {"vm": vm, "folder": folder})

    async def stop(self, handle: Handle) -> None:
        vm: QemuVm = handle.extra["vm"]
        folder: InstanceDir = handle.extra["folder"]
        try:
            await self._call(vm.stop, self.stop_grace)
        finally:
            vm.kill()
            self._forget(vm)
            folder.remove()

    def alive(self, handle: Handle) -> bool:
        vm: QemuVm = handle.extra["vm"]
        return vm.proc.poll() is None

    def console_tail(self, handle: Handle) -> str:
        vm: QemuVm = handle.extra["vm"]
        return vm.console_tail()

    def kill_all(self) -> None:
        with self._lock:
            vms = list(self._vms.values())
            self._vms.clear()
        for vm, folder in vms:
            vm.kill()
            with contextlib.suppress(Exception):
                vm.wait(10)
            folder.remove()

    async def close(self) -> None:
        self.kill_all()
        # Boots still in flight end quickly once their VM is gone; then nothing is left.
        shutdown = asyncio.get_running_loop().run_in_executor(
            None, lambda: self.executor.shutdown(wait=True, cancel_futures=True))
        try:
            await asyncio.wait_for(shutdown, 30)
        except TimeoutError:
            log.error("VM threads did not finish in 30 s; ending their VMs anyway")
        self.kill_all()
