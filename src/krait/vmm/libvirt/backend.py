"""The libvirt backend and the VMs it runs: domains started from a spec, watched and
ended through libvirt."""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from krait.errors import ConfigError, VmError
from krait.guest import protocol
from krait.vmm.base import Backend, QemuOptions, VmSpec, VmStatus
from krait.vmm.libvirt.connection import (
    DEFAULT_URI,
    LOST_AFTER,
    binding,
    call,
    check_host,
    connect,
    error_message,
    host_of,
    is_local,
)
from krait.vmm.libvirt.domain import Placed, domain_xml
from krait.vmm.libvirt.pool import BOOT_PREFIX, POOL_PATH, Pool
from krait.vmm.libvirt.streams import StreamChannel
from krait.vmm.reporting import ReportingVm

log = logging.getLogger("krait")

CONSOLE, CONTROL = "serial0", "serial1"  # ttyS0 and ttyS1 in the guest


class LibvirtBackend(Backend):
    name = "libvirt"

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        self.uri = uri

    @property
    def address(self) -> str:
        """Where the host's forwarded ports are reached: its address, as this machine
        resolves the URI's host name (loopback for a local libvirtd)."""
        if urlsplit(self.uri).hostname in (None, ""):
            return "127.0.0.1"
        try:
            return socket.gethostbyname(host_of(self.uri))
        except OSError:
            raise ConfigError(f"cannot resolve the host of {self.uri}") from None

    # -- the domain ---------------------------------------------------------------------
    def domain_xml(self, spec: VmSpec, name: str, placed: Placed) -> str:
        return domain_xml(spec, name, placed)

    def domain_name(self, spec: VmSpec) -> str:
        base = spec.workdir.name if spec.workdir else f"{spec.name}-{secrets.token_hex(3)}"
        return f"krait-{base}"

    def command(self, spec: VmSpec) -> list[str]:
        return ["virsh", "--connect", self.uri, "create", f"{self.domain_name(spec)}.xml"]

    def describe(self, spec: VmSpec) -> str:
        """The domain, with the files where they would be in the host's pool."""
        return self.domain_xml(spec, self.domain_name(spec), Placed(
            f"{POOL_PATH}/{spec.kernel.name}",
            tuple(f"{POOL_PATH}/{d.path.name}" for d in spec.disks),
            f"{POOL_PATH}/{BOOT_PREFIX}NAME.disk" if spec.boot_settings else None))

    # -- starting -----------------------------------------------------------------------
    def _refuse_unsupported(self, spec: VmSpec) -> None:
        if spec.services:
            # The tunnel rides on QEMU's guestfwd, which libvirt's user network does not
            # offer; a virtio-serial <channel> would, but its socket lives where QEMU runs.
            raise ConfigError("the libvirt backend cannot carry declared services (connect) "
                              "yet: libvirt's user network has no guest forward for krait's "
                              "tunnel", hint="use --backend qemu for an app that reaches a "
                              "service outside its VM")
        if spec.volumes:
            raise ConfigError("the libvirt backend cannot attach volumes yet",
                              hint="use --backend qemu for an app with volumes")
        if spec.qemu != QemuOptions():
            raise ConfigError("the libvirt backend has no gdb stub or snapshots",
                              hint="use --backend qemu")

    def start(self, spec: VmSpec, on_console: Callable[[str], None] | None = None
              ) -> LibvirtVm:
        self._refuse_unsupported(spec)
        if is_local(self.uri):
            from krait.vmm.ports import check_port_free

            for forward in spec.ports:
                check_port_free(forward.host_addr, forward.host)
        else:  # -p PORT on another host is that host's PORT
            spec = replace(spec, ports=tuple(replace(f, host_addr=self.address)
                                             for f in spec.ports))
        conn = connect(self.uri)
        check_host(self.uri, conn, spec.accel.name)
        pool = Pool(self.uri, conn)
        name = self.domain_name(spec)
        files = (pool.put_file(spec.kernel), tuple(pool.put_file(d.path) for d in spec.disks))
        libvirt = binding()
        boot = domain = None
        streams: list[StreamChannel] = []
        try:
            if spec.boot_settings:  # this boot's own: named for it, removed when it ends
                boot = pool.put_bytes(f"{BOOT_PREFIX}{name}-{secrets.token_hex(4)}.disk",
                                      spec.boot_settings)
            domain = call(self.uri, f"start {name}", conn.createXML,
                           self.domain_xml(spec, name, Placed(*files, boot)),
                           libvirt.VIR_DOMAIN_START_PAUSED)
            for device in (CONSOLE, CONTROL):
                channel = StreamChannel(conn)
                streams.append(channel)
                call(self.uri, f"open {name}'s {device}", domain.openConsole, device,
                      channel.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
                channel.watch()
            call(self.uri, f"start {name}", domain.resume)
            return LibvirtVm(spec, self.uri, domain, streams, boot, on_console)
        except BaseException:
            for channel in streams:
                channel.close()
            if domain is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    domain.destroy()
            if boot is not None:
                pool.delete(Path(boot).name)
            raise

    @property
    def label(self) -> str:
        return self.name if is_local(self.uri) else f"{self.name}@{self.host_name}"

    @property
    def host_name(self) -> str:
        return host_of(self.uri)

    def status(self, ref: str, detail: bool = True) -> VmStatus:
        """The domain ``ref`` names, on this host (not running if the host cannot be
        asked)."""
        libvirt = binding()
        try:
            state, _ = connect(self.uri).lookupByName(ref).state()
        except (libvirt.libvirtError, VmError):
            return VmStatus.gone()
        if state == libvirt.VIR_DOMAIN_PAUSED:
            return VmStatus(running=True, paused=True)
        running = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)
        return VmStatus(running=state in running)

    def remove(self, ref: str) -> None:
        """End domain ``ref`` now and delete its boot settings (a detached instance
        whose owner died); a host that cannot be reached is logged, not raised."""
        name = ref
        libvirt = binding()
        try:
            conn = connect(self.uri)
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
            Pool(self.uri, conn).delete_prefix(f"{BOOT_PREFIX}{name}-")
        except VmError as e:
            log.warning("could not end %s: %s", name, e.message)


class LibvirtVm(ReportingVm):
    vmm_name = "libvirt's QEMU"

    def __init__(self, spec: VmSpec, uri: str, domain: Any, streams: list[StreamChannel],
                 boot: str | None, on_console: Callable[[str], None] | None = None) -> None:
        super().__init__(spec, on_console)
        self.uri = uri
        self.domain = domain
        self.domain_name = str(domain.name())
        self.ref = self.domain_name  # what LibvirtBackend.status/remove find it by
        self._console_stream, self._control_stream = streams
        self._boot = boot
        self._exit: int | None = None
        self._killed = False
        self._lost = False  # libvirt stopped answering about it (see _active)
        self._lost_since: float | None = None
        # Set by libvirt's event loop when the domain stops: waits need not ask.
        self._stopped = threading.Event()
        self._events: int | None = None
        libvirt = binding()
        with contextlib.suppress(libvirt.libvirtError):
            self._events = domain.connect().domainEventRegisterAny(
                domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        self._start()

    def _on_lifecycle(self, _conn: Any, _domain: Any, event: int, _detail: int,
                      _opaque: Any) -> None:
        if event in (binding().VIR_DOMAIN_EVENT_STOPPED, binding().VIR_DOMAIN_EVENT_CRASHED):
            self._stopped.set()

    def _open_control(self) -> StreamChannel:
        return self._control_stream

    def _console_chunks(self) -> Iterator[bytes]:
        while data := self._console_stream.recv(65536):
            yield data

    def alive(self) -> bool:
        """Cheap, as the gateway asks it often: no call to libvirt. The console stream
        ends when the domain does (or the connection is lost; poll() then asks)."""
        return (self._exit is None and not self._stopped.is_set()
                and not self._console_stream.ended.is_set())

    def _active(self) -> bool:
        """Does the domain run? A lost connection (an SSH child ended by the terminal's
        Ctrl-C, say) is opened again and the domain looked up by name. Only libvirt
        saying there is no such domain means it ended; a host that cannot be asked
        counts as running until it has not answered for LOST_AFTER seconds."""
        libvirt = binding()
        try:
            try:
                active = bool(self.domain.isActive())
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False  # a transient domain that ended is gone
                self.domain = connect(self.uri).lookupByName(self.domain_name)
                active = bool(self.domain.isActive())
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            return self._unanswered(error_message(e))
        except VmError as e:
            return self._unanswered(e.message)
        self._lost_since = None
        return active

    def _unanswered(self, why: str) -> bool:
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
            log.warning("%s: lost libvirt at %s (%s); asking again", self.domain_name,
                        self.uri, why)
        if now - self._lost_since < LOST_AFTER:
            return True
        log.error("%s: libvirt at %s has not answered for %gs; given up (the domain may "
                  "still run there: `virsh -c URI destroy %s`)", self.domain_name, self.uri,
                  LOST_AFTER, self.domain_name)
        self._lost = True
        return False

    def poll(self) -> int | None:
        if self._exit is not None:
            return self._exit
        if not self._stopped.is_set() and self._active():
            return None
        # What the guest said last (its exit status among it) may still be on its way.
        deadline = time.monotonic() + 1.0
        while (self._status is None and not self._control_stream.ended.is_set()
               and time.monotonic() < deadline):
            time.sleep(0.01)
        self._exit = -9 if self._killed else 255 if self._lost else 0
        for channel in (self._console_stream, self._control_stream):
            channel.end()  # whatever libvirt still has to say, the readers stop
        return self._exit

    def _wait_exit(self, timeout: float | None) -> int | None:
        """Woken by libvirt's event that the domain stopped; asks libvirt itself once a
        second at most (events are lost with a connection)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                return None
            self._stopped.wait(left)
        return code

    def kill(self) -> None:
        """Destroy the domain; one that will not go (a QEMU that hangs) is a VmError."""
        libvirt = binding()
        for attempt in range(3):
            if self.poll() is not None:  # the domain handle is a live one now
                return
            self._killed = True
            try:
                self.domain.destroy()
                return
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if attempt == 2:
                    raise VmError(f"libvirt at {self.uri} could not end {self.domain_name}: "
                                  f"{error_message(e)}") from None
                time.sleep(1)

    def pause(self) -> None:
        call(self.uri, f"pause {self.domain_name}", self.domain.suspend)

    def resume(self) -> None:
        call(self.uri, f"resume {self.domain_name}", self.domain.resume)
        self.send_control(f"{protocol.WAKE} {time.time_ns()}")

    def _release(self) -> None:
        self._console_stream.close()
        if self._events is not None:
            with contextlib.suppress(binding().libvirtError):
                self.domain.connect().domainEventDeregisterAny(self._events)
        if self._boot is not None:
            try:  # on a connection opened again if the VM's was lost
                Pool(self.uri, connect(self.uri)).delete(Path(self._boot).name)
            except VmError as e:
                log.warning("%s: could not remove its boot settings: %s", self.domain_name,
                            e.message)

    def __del__(self) -> None:  # a VM must never outlive its owner by accident
        if getattr(self, "_exit", 0) is None and not getattr(self, "_killed", True):
            with contextlib.suppress(Exception):
                self.kill()
