"""What the gateway asks of instances: boot one (ready when it returns), stop one, is it
alive. :class:`VmDriver` does it with real VMs of any backend, on one host or several
(and wakes clones from snapshots where the backend can); tests use a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from krait.errors import KraitError
from krait.fleet import snapshot
from krait.fleet.state import InstanceDir, InstanceRecord, RunRecord, create_instance
from krait.image.archive import Image, open_image
from krait.image.check_requests import ask, warm_requests
from krait.image.signing import Trust
from krait.vmm.backends import get_backend
from krait.vmm.base import Backend, Vm, VmSpec
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.ports import free_port

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
    image: Image | None = None  # the opened image (None for a fake driver's)

    @property
    def opened(self) -> Image:
        if self.image is None:
            raise KraitError(f"{self.path} was not opened")
        return self.image

    @classmethod
    def open(cls, path: Path, generation: int, trust: Trust | None = None) -> ImageRef:
        image = open_image(path, trust)
        return cls(path.resolve(), generation, image.name, image.digest, image)


@dataclass
class Handle:
    """A ready instance: where to connect (the driver keeps the rest, by ``id``)."""

    id: str
    address: tuple[str, int]
    woke_from_snapshot: bool = False
    boot_seconds: float = 0.0
    paused: bool = False
    host: str = ""  # the libvirt host it runs on; "" for this machine


@dataclass
class Host:
    """Somewhere instances run: this machine's QEMU, or one libvirt host."""

    backend: Backend
    uri: str = ""  # "" for this machine
    address: str = "127.0.0.1"  # where its instances' forwarded ports are reached
    instances: int = 0
    failed_until: float = 0.0  # time.monotonic() before which it is not tried again


# A host whose boot failed is skipped for this long, then tried again.
HOST_RETRY_SECONDS = 30.0


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

    async def pause(self, handle: Handle) -> None:
        """Stop the instance's CPUs; it keeps its memory and resumes in milliseconds."""
        raise NotImplementedError

    async def resume(self, handle: Handle) -> None:
        """Run a paused instance again."""
        raise NotImplementedError

    def forget_snapshots(self, image: ImageRef) -> None:
        """An image is replaced: its snapshots will not be woken from again."""
        return None

    async def close(self) -> None:
        """Release what the driver holds (all instances are stopped by then)."""
        return None

    async def prewarm(self, image: ImageRef, instance_id: str) -> bool:
        """Make ``image``'s snapshot now, if instances wake from snapshots and it has
        none, so that no request pays for a cold boot; True if one was made."""
        return False

    def kill_all(self) -> None:
        """End every instance now, without grace (a second Ctrl-C)."""
        return None



def hosts_for(backend: str, uris: tuple[str, ...]) -> list[Host]:
    """The hosts a serve places instances on: each libvirt URI, or the backend's one."""
    backends = [get_backend(backend, uri) for uri in uris] or [get_backend(backend)]
    return [Host(b, b.uri, b.address) for b in backends]


class VmDriver(Driver):
    """Instances are VMs with a host port krait picks, visible in `krait ps`; placed on
    the host with the fewest, skipping for a while one whose boot failed."""

    def __init__(self, options: RunOptions, use_snapshots: bool = True,
                 boot_timeout: float = 60.0, stop_grace: float = 5.0,
                 hosts: list[Host] | None = None) -> None:
        self.options = options
        self.hosts = hosts or [Host(get_backend())]
        self.use_snapshots = use_snapshots
        self.boot_timeout = boot_timeout
        self.stop_grace = stop_grace
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="krait-vm")
        # Every VM started and not yet stopped, whatever happened to the task that
        # started it (a cancelled boot must not leave a VM behind): close() ends them.
        self._vms: dict[int, tuple[Vm, InstanceDir]] = {}
        self._running: dict[str, tuple[Vm, InstanceDir, Host]] = {}  # by instance id
        self._lock = threading.Lock()

    @property
    def backend(self) -> Backend:
        return self.hosts[0].backend

    def _place(self, tried: tuple[Host, ...] = ()) -> Host | None:
        """The host with the fewest instances, of those not tried for this boot; one
        whose boot failed lately only if no other is left."""
        now = time.monotonic()
        left = [h for h in self.hosts if h not in tried]
        ready = [h for h in left if h.failed_until <= now] or left
        return min(ready, key=lambda h: h.instances) if ready else None

    def vm(self, handle: Handle) -> Vm:
        """The instance's VM; a KraitError once it was stopped (or all were killed)."""
        running = self._running.get(handle.id)
        if running is None:
            raise KraitError(f"{handle.id} is not running")
        return running[0]

    def _start_vm(self, backend: Backend, spec: VmSpec, folder: InstanceDir,
                  state: Path | None) -> Vm:
        vm = (backend.restore(spec, state, self.boot_timeout) if state is not None
              else backend.start(spec))
        with self._lock:
            self._vms[id(vm)] = (vm, folder)
        return vm

    def _end_vm(self, vm: Vm) -> None:
        vm.kill()
        vm.wait()
        self._forget(vm)

    def _forget(self, vm: Vm) -> None:
        with self._lock:
            self._vms.pop(id(vm), None)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _spec(self, image: ImageRef, folder: InstanceDir, host: Host, port: int) -> VmSpec:
        img = image.opened
        guest_port = img.manifest.first_port
        options = replace(self.options, ports=(PortForward(port, guest_port, host.address),),
                          workdir=folder.path, console_log=folder.console_log)
        _, spec = prepare(image.path, options, image=img)
        return spec.with_qemu(qmp=host.backend.snapshots)

    def snapshot_for(self, image: ImageRef, spec: VmSpec) -> snapshot.Snapshot:
        """The snapshot instances of ``image`` with ``spec`` wake from (it may not exist);
        its device model is QEMU's command line for the spec, without what differs from
        one instance to the next."""
        model = replace(spec, ports=(), workdir=None, console_log=None).with_qemu(qmp=True)
        return snapshot.for_image(image.opened, spec, self.backend.command(model))

    async def boot(self, image: ImageRef, instance_id: str) -> Handle:
        """Boot on the best host; if that fails, on the next (each host once)."""
        tried: tuple[Host, ...] = ()
        failure = BootFailed("there is no host to boot on")
        while (host := self._place(tried)) is not None:
            tried += (host,)
            host.instances += 1
            try:
                handle = await self._boot_on(host, image, instance_id)
            except BootFailed as e:
                host.instances -= 1
                if len(self.hosts) == 1:
                    raise
                host.failed_until = time.monotonic() + HOST_RETRY_SECONDS
                log.warning("%s: could not boot on %s (%s); not placing there for %gs",
                            instance_id, host.uri or "this machine", e.reason,
                            HOST_RETRY_SECONDS)
                failure = e
                continue
            except BaseException:
                host.instances -= 1
                raise
            host.failed_until = 0.0
            return handle
        raise BootFailed(f"no host could boot it (the last: {failure.reason})")

    async def _boot_on(self, host: Host, image: ImageRef, instance_id: str) -> Handle:
        started = time.monotonic()
        # A remote host's ports cannot be probed from here: one picked at random, and
        # a taken one fails the boot (the next boot picks another).
        port = free_port() if host.address == "127.0.0.1" else random.randint(20000, 59999)
        backend = host.backend
        try:
            record = InstanceRecord(
                name=instance_id, image=str(image.path), image_name=image.name,
                image_digest=image.digest, memory=0, vcpus=0, accel="", ports=[],
                created=time.time(), owner="serve", env=dict(self.options.env),
                backend=backend.name, host=host.uri)
            run = RunRecord(owner_pid=os.getpid(), started=time.time())
            folder = create_instance(record, run)
            spec = self._spec(image, folder, host, port)
            record.memory, record.vcpus, record.accel = spec.memory, spec.vcpus, spec.accel.name
            record.ports = [[port, spec.ports[0].guest]]
            folder.write_record(record)
        except KraitError as e:
            raise BootFailed(e.message) from e
        snap = (self.snapshot_for(image, spec) if self.use_snapshots and backend.snapshots
                else None)
        vm: Vm | None = None
        if snap is not None and snap.exists():
            if await self._call(snap.intact):
                vm = await self._wake(backend, instance_id, spec, folder, snap)
            else:
                log.warning("%s: snapshot %s changed since it was made; booting instead",
                            instance_id, snap.name)
                snap.remove()
        woke = vm is not None
        if vm is None:
            vm = await self._cold_boot(backend, instance_id, spec, folder, snap, image)
            woke = vm.spec.qemu.ram_file is not None  # booted as a template, serving as a clone
        run.ref = vm.ref
        run.ready = time.time()
        run.snapshot = str(snap.state) if woke and snap else None
        folder.write_run(run)
        self._running[instance_id] = (vm, folder, host)
        return Handle(instance_id, (host.address, port), woke, time.monotonic() - started,
                      host=host.uri)

    def _clone(self, spec: VmSpec, snap: snapshot.Snapshot) -> VmSpec:
        return spec.with_qemu(ram_file=snap.ram, ram_shared=False)

    async def _wake(self, backend: Backend, instance_id: str, spec: VmSpec,
                    folder: InstanceDir, snap: snapshot.Snapshot) -> Vm | None:
        """A clone of the snapshot; None (the snapshot removed) if it does not wake."""
        try:
            vm: Vm = await self._call(self._start_vm, backend, self._clone(spec, snap), folder,
                                      snap.state)
            os.utime(snap.state)  # for prune: least recently used first
            return vm
        except KraitError as e:
            log.warning("%s: waking from snapshot %s failed (%s); booting instead",
                        instance_id, snap.name, e.message)
            with self._lock:
                stale = [v for v, f in self._vms.values() if f is folder]
            for v in stale:
                await self._call(self._end_vm, v)
            snap.remove()
            return None

    async def _cold_boot(self, backend: Backend, instance_id: str, spec: VmSpec,
                         folder: InstanceDir, snap: snapshot.Snapshot | None, image: ImageRef
                         ) -> Vm:
        """Boot; with ``snap``, as its template: RAM in a new file, saved when ready and
        warmed (see _warm), then ended, and this instance wakes from it like every later
        one."""
        ram = snapshot.new_ram_file(snap) if snap is not None else None
        template = spec.with_qemu(ram_file=ram, ram_shared=True) if ram else spec
        try:
            vm: Vm = await self._call(self._start_vm, backend, template, folder, None)
        except KraitError as e:
            folder.remove()
            if ram:
                ram.unlink(missing_ok=True)
            raise BootFailed(e.message) from e
        ok = await self._call(vm.wait_ready, self.boot_timeout)
        if not ok:
            vm.kill()
            result = await self._call(vm.wait)
            self._forget(vm)
            tail = [line for line in result.console_tail.splitlines() if line.strip()][-3:]
            folder.remove()
            if ram:
                ram.unlink(missing_ok=True)
            raise BootFailed(result.reason + (": " + " | ".join(tail) if tail else ""))
        if snap is None or ram is None:
            return vm
        await self._call(self._warm, instance_id, image, spec)
        try:
            saved = time.monotonic()
            await self._call(vm.save, snap.state)
            await self._call(self._end_vm, vm)
            snapshot.complete(snap, ram)
            snapshot.record_image(snap, image.digest)
            log.info("%s: saved snapshot %s in %.3fs", instance_id, snap.name,
                     time.monotonic() - saved)
        except KraitError as e:
            log.warning("%s: could not save a snapshot (%s); this instance boots without",
                        instance_id, e.message)
            snap.remove()
            ram.unlink(missing_ok=True)
            await self._call(self._end_vm, vm)
            plain: Vm = await self._call(self._start_vm, backend, spec, folder, None)
            if not await self._call(plain.wait_ready, self.boot_timeout):
                await self._call(self._end_vm, plain)
                folder.remove()
                raise BootFailed("the instance did not boot again after a failed snapshot"
                                 ) from e
            return plain
        clone = await self._wake(backend, instance_id, spec, folder, snap)
        if clone is None:
            folder.remove()
            raise BootFailed("the instance did not wake from the snapshot it just saved")
        return clone

    def _warm(self, instance_id: str, image: ImageRef, spec: VmSpec) -> None:
        """Ask a template the image's check requests before it is saved: what the app
        does on its first requests (lazy imports, caches, a framework's set-up) is then
        done in every clone. An answer that does not come, or of 500 or more, is logged
        and the snapshot saved all the same: the app booted and serves."""
        requests = warm_requests(image.opened)
        (forward,) = spec.ports
        for request in requests:
            try:
                status = ask(forward.host_addr, forward.host, request)
            except (OSError, http.client.HTTPException) as e:
                log.warning("%s: warming the snapshot, %s had no answer (%s)",
                            instance_id, request, e)
                continue
            if status >= 500:
                log.warning("%s: warming the snapshot, %s answered %d", instance_id,
                            request, status)

    async def prewarm(self, image: ImageRef, instance_id: str) -> bool:
        host = self.hosts[0]
        if not (self.use_snapshots and host.backend.snapshots):
            return False
        # The snapshot's identity leaves out what differs per instance (ports, folders).
        _, spec = prepare(image.path, replace(self.options, ports=()), image=image.opened)
        if self.snapshot_for(image, spec).exists():
            return False
        # A boot makes the snapshot (booted as its template, then woken as a clone);
        # the clone is not kept: nothing runs until the first request.
        handle = await self.boot(image, instance_id)
        await self.stop(handle)
        return True

    async def pause(self, handle: Handle) -> None:
        await self._call(self.vm(handle).pause)
        handle.paused = True

    async def resume(self, handle: Handle) -> None:
        await self._call(self.vm(handle).resume)
        handle.paused = False

    async def stop(self, handle: Handle) -> None:
        running = self._running.get(handle.id)
        if running is None:  # stopped already, or ended by kill_all
            return
        vm, folder, host = running
        try:
            if handle.paused:  # a paused guest cannot stop gracefully
                with contextlib.suppress(KraitError):
                    await self.resume(handle)
            await self._call(vm.stop, self.stop_grace)
        finally:
            vm.kill()
            self._forget(vm)
            folder.remove()
            if self._running.pop(handle.id, None) is not None:
                host.instances -= 1

    def alive(self, handle: Handle) -> bool:
        running = self._running.get(handle.id)
        return running is not None and running[0].alive()

    def forget_snapshots(self, image: ImageRef) -> None:
        snapshot.prune(image_digest=image.digest)

    def console_tail(self, handle: Handle) -> str:
        running = self._running.get(handle.id)
        return running[0].console_tail() if running else ""

    def kill_all(self) -> None:
        with self._lock:
            vms = list(self._vms.values())
            self._vms.clear()
        self._running.clear()
        for host in self.hosts:
            host.instances = 0
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
