"""The libvirt backend: the same VM as :mod:`krait.vmm.qemu`, as a libvirt domain.

libvirt is the engine that already manages QEMU on many hosts; through its Python binding
krait reaches a local ``libvirtd`` (``qemu:///system``) or one on another host
(``qemu+ssh://user@host/system``) the same way. The domain is made from the same
:class:`VmSpec`: microvm, the kernel booted directly, virtio-mmio disks (the image's
layers read-only), the console and the control port as the two serial ports, and QEMU's
user network, deny-by-default, with the ``-p`` forwards. libvirt has no element for a
restricted user network with forwards, so that one device is passed to QEMU as
arguments (``<qemu:commandline>``).

Everything crosses the libvirt connection, so a remote host needs nothing but libvirtd:

- the image's kernel and disks are copied into a storage pool on the host, named by
  their digest (a file already there is not copied again);
- the console and the control port are read and written through libvirt's console
  streams (the domain starts paused until both are open, so nothing the guest says is
  lost);
- liveness, pause, resume and the hard stop are libvirt calls.

Domains are transient (``krait-NAME``): once it ends, nothing of a VM is left on the host
but the image's files in the pool, which the next boot of the same image uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from krait.errors import ConfigError, VmError
from krait.guest import protocol
from krait.vmm.base import Backend, QemuOptions, VmSpec, VmStatus
from krait.vmm.options import UserNetwork
from krait.vmm.reporting import ReportingVm

log = logging.getLogger("krait")

DEFAULT_URI = "qemu:///system"
POOL = "krait"  # the storage pool krait's files live in, on each host ...
POOL_ENV = "KRAIT_LIBVIRT_POOL"  # ... in this folder of the host's, if it has to be made
POOL_PATH = "/var/lib/krait/images"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
CONSOLE, CONTROL = "serial0", "serial1"  # ttyS0 and ttyS1 in the guest
BOOT_PREFIX = "boot-"  # boot-DOMAIN-TOKEN.disk: one boot's settings, in the pool
DONE = ".done"  # NAME.done beside NAME: NAME was copied whole
SEND_TIMEOUT = 10.0  # a control message the guest does not take in this long fails
LOST_AFTER = 30.0  # a host that does not answer about a domain this long: given up


_events_lock = threading.Lock()
_events_running = False


def _libvirt() -> Any:
    """The binding, with its event loop running (streams and keepalives need one)."""
    global _events_running
    try:
        import libvirt
    except ImportError:
        raise ConfigError("the libvirt backend needs libvirt's Python binding",
                          hint="install it: `pip install 'krait[libvirt]'` (with libvirt-dev "
                          "and pkg-config from apt), or use --backend qemu") from None
    with _events_lock:
        if not _events_running:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # exceptions only
            # Before any connection is opened; its thread runs for the process's life.
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_events, args=(libvirt,), daemon=True,
                             name="libvirt-events").start()
            _events_running = True
    return libvirt


def _run_events(libvirt: Any) -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def host_of(uri: str) -> str:
    """The host a URI names (``127.0.0.1`` for a local libvirtd)."""
    return urlsplit(uri).hostname or "127.0.0.1"


def is_local(uri: str) -> bool:
    """A libvirtd of this machine's, reached without a transport (qemu:///system); one
    over SSH is another host's, even at 127.0.0.1 (it is the SSH server's)."""
    parts = urlsplit(uri)
    return "+" not in parts.scheme and parts.hostname in (None, "", "localhost")


def _message(error: Exception) -> str:
    text = getattr(error, "get_error_message", lambda: None)() or str(error)
    return " ".join(text.split())


_connections: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def _lock(key: str) -> threading.Lock:
    """One lock per key (a host, a file on a host): one slow host holds up no other."""
    with _locks_lock:
        return _locks.setdefault(key, threading.Lock())


def connect(uri: str) -> Any:
    """One open connection per URI for this process (libvirt's are thread-safe), with
    keepalives: a host that goes silent is a failed call within seconds, not a hang."""
    libvirt = _libvirt()
    with _lock(uri):
        conn = _connections.get(uri)
        if conn is not None and conn.isAlive():
            return conn
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise VmError(f"cannot reach libvirt at {uri}: {_message(e)}",
                          hint=_reach_hint(uri)) from None
        with contextlib.suppress(libvirt.libvirtError):  # drivers in this process have none
            conn.setKeepAlive(5, 3)
        _connections[uri] = conn
        return conn


def _reach_hint(uri: str) -> str:
    if uri.startswith("qemu+ssh://"):
        return (f"check that `ssh {host_of(uri)}` works without a password and that "
                "libvirtd runs there")
    return "start libvirtd (and virtlogd), or use --backend qemu"


def _call(uri: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A libvirt call whose failure is a VmError naming the host."""
    libvirt = _libvirt()
    try:
        return fn(*args)
    except libvirt.libvirtError as e:
        raise VmError(f"libvirt at {uri} could not {what}: {_message(e)}") from None


_checked: set[tuple[str, str]] = set()


def check_host(uri: str, conn: Any, accel: str) -> None:
    """Refuse a libvirt host that cannot run krait's VM (a driver that is not QEMU's, no
    QEMU for x86_64, no microvm), once per host and accelerator, before anything is
    copied there."""
    if (uri, accel) in _checked:
        return
    libvirt = _libvirt()
    kind = "qemu" if accel == "tcg" else "kvm"
    hint = ("install QEMU there (`apt-get install qemu-system-x86`) and restart libvirtd, "
            "or pick another host")
    try:
        driver = conn.getType()
        if driver != "QEMU":
            raise VmError(f"libvirt at {uri} drives {driver}, not QEMU", hint=hint)
        conn.getDomainCapabilities(None, "x86_64", "microvm", kind)
    except libvirt.libvirtError as e:
        raise VmError(f"libvirt at {uri} has no QEMU that runs a microvm ({kind}): "
                      f"{_message(e)}", hint=hint) from None
    _checked.add((uri, accel))


@dataclass(frozen=True)
class Placed:
    """Where the spec's files are on the libvirt host."""

    kernel: str
    disks: tuple[str, ...]
    boot: str | None  # this boot's settings, a volume of its own


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
        tcg = spec.accel.name == "tcg"
        domain = ET.Element("domain", {"type": "qemu" if tcg else "kvm"})
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "memory", {"unit": "MiB"}).text = str(spec.memory)
        ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
        os_ = ET.SubElement(domain, "os")
        ET.SubElement(os_, "type", {"arch": "x86_64", "machine": "microvm"}).text = "hvm"
        ET.SubElement(os_, "kernel").text = placed.kernel
        ET.SubElement(os_, "cmdline").text = " ".join(spec.cmdline)
        # No <features><acpi/>: QEMU then announces the virtio-mmio devices on the
        # kernel command line, as krait's own QEMU command does.
        if tcg:  # a small translation cache keeps an idle instance cheap, as with QEMU's
            features = ET.SubElement(ET.SubElement(domain, "features"), "tcg")
            ET.SubElement(features, "tb-cache", {"unit": "MiB"}).text = "64"
        ET.SubElement(domain, "cpu", {"mode": "maximum" if tcg else "host-passthrough"})
        ET.SubElement(domain, "clock", {"offset": "utc"})
        # The guest resets to end; nothing is ever restarted by libvirt.
        for event in ("on_poweroff", "on_reboot", "on_crash"):
            ET.SubElement(domain, event).text = "destroy"
        devices = ET.SubElement(domain, "devices")
        ET.SubElement(devices, "controller", {"type": "usb", "model": "none"})  # no PCI
        disks = [(path, True) for path in placed.disks]
        if placed.boot is not None:
            disks.append((placed.boot, True))
        for index, (path, readonly) in enumerate(disks):
            disk = ET.SubElement(devices, "disk", {"type": "file", "device": "disk"})
            ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
            ET.SubElement(disk, "source", {"file": path})
            ET.SubElement(disk, "target", {"dev": f"vd{chr(ord('a') + index)}",
                                           "bus": "virtio"})
            if readonly:
                ET.SubElement(disk, "readonly")
            ET.SubElement(disk, "address", {"type": "virtio-mmio"})
        for port in (0, 1):  # the console, then the control port
            serial = ET.SubElement(devices, "serial", {"type": "pty"})
            ET.SubElement(serial, "target", {"port": str(port)})
        rng = ET.SubElement(devices, "rng", {"model": "virtio"})
        ET.SubElement(rng, "backend", {"model": "random"}).text = "/dev/urandom"
        ET.SubElement(rng, "address", {"type": "virtio-mmio"})
        ET.SubElement(devices, "memballoon", {"model": "none"})
        # Deny by default, with the forwards: QEMU's restricted user network (libvirt's
        # <interface type='user'> has neither restrict nor forwards without passt).
        args = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
        network = UserNetwork("net0", spec.ports, restrict=True).args()
        for value in (*network, "-device", "virtio-net-device,netdev=net0"):
            ET.SubElement(args, f"{{{QEMU_NS}}}arg", {"value": value})
        ET.register_namespace("qemu", QEMU_NS)
        ET.indent(domain)
        return ET.tostring(domain, encoding="unicode") + "\n"

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
            raise ConfigError("the libvirt backend cannot carry declared services (connect) "
                              "yet", hint="use --backend qemu for an app that reaches a "
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
            from krait.vmm.qemu import check_port_free

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
        libvirt = _libvirt()
        boot = domain = None
        streams: list[StreamChannel] = []
        try:
            if spec.boot_settings:  # this boot's own: named for it, removed when it ends
                boot = pool.put_bytes(f"{BOOT_PREFIX}{name}-{secrets.token_hex(4)}.disk",
                                      spec.boot_settings)
            domain = _call(self.uri, f"start {name}", conn.createXML,
                           self.domain_xml(spec, name, Placed(*files, boot)),
                           libvirt.VIR_DOMAIN_START_PAUSED)
            for device in (CONSOLE, CONTROL):
                channel = StreamChannel(conn)
                streams.append(channel)
                _call(self.uri, f"open {name}'s {device}", domain.openConsole, device,
                      channel.stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
                channel.watch()
            _call(self.uri, f"start {name}", domain.resume)
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
        libvirt = _libvirt()
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
        libvirt = _libvirt()
        try:
            conn = connect(self.uri)
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()
            Pool(self.uri, conn).delete_prefix(f"{BOOT_PREFIX}{name}-")
        except VmError as e:
            log.warning("could not end %s: %s", name, e.message)


class Pool:
    """krait's storage pool on a libvirt host: files named by their digest."""

    def __init__(self, uri: str, conn: Any) -> None:
        self.uri = uri
        self.conn = conn
        self.pool = self._ensure()

    def _ensure(self) -> Any:
        """The host's pool "krait"; made (transient: nothing written to the host's
        libvirt configuration) over its folder if libvirtd does not have it yet."""
        libvirt = _libvirt()
        try:
            pool = self.conn.storagePoolLookupByName(POOL)
        except libvirt.libvirtError:
            path = os.environ.get(POOL_ENV, POOL_PATH)
            xml = ET.Element("pool", {"type": "dir"})
            ET.SubElement(xml, "name").text = POOL
            target = ET.SubElement(xml, "target")
            ET.SubElement(target, "path").text = path
            # 0711: QEMU (libvirt's unprivileged user) reaches the files, lists nothing.
            ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0711"
            try:
                pool = self.conn.storagePoolCreateXML(
                    ET.tostring(xml, encoding="unicode"),
                    libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
            except libvirt.libvirtError as e:
                with contextlib.suppress(libvirt.libvirtError):  # made by another krait
                    return self.conn.storagePoolLookupByName(POOL)
                raise VmError(f"libvirt at {self.uri} could not make the storage pool "
                              f"{POOL} in {path}: {_message(e)}") from None
        if not pool.isActive():
            _call(self.uri, f"start the storage pool {POOL}", pool.create, 0)
        return pool

    def _lookup(self, name: str) -> Any:
        libvirt = _libvirt()
        try:
            return self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return None

    def put_file(self, path: Path) -> str:
        """Copy a file named by its digest (``DIGEST.SUFFIX``) unless the host has it
        whole: a copy counts once its ``.done`` marker is there, written after the last
        byte (one that was cut off, or is under way in another process, has none)."""
        with _lock(f"{self.uri} {path.name}"):  # one copy at a time from this process
            existing = self._lookup(path.name)
            if existing is not None and self._lookup(path.name + DONE) is not None:
                return str(_call(self.uri, f"find {path.name}", existing.path))
            if existing is not None:
                self.delete(path.name)
            with path.open("rb") as source:
                copied = self._upload(path.name, path.stat().st_size, source.read, 0o444)
            self._upload(path.name + DONE, 0, lambda _n: b"", 0o444)
            return copied

    def put_bytes(self, name: str, data: bytes) -> str:
        view = memoryview(data)
        offset = 0

        def read(n: int) -> bytes:
            nonlocal offset
            chunk = bytes(view[offset:offset + n])
            offset += len(chunk)
            return chunk

        return self._upload(name, len(data), read, mode=0o600)

    def _upload(self, name: str, size: int, read: Callable[[int], bytes], mode: int) -> str:
        libvirt = _libvirt()
        xml = ET.Element("volume")
        ET.SubElement(xml, "name").text = name
        ET.SubElement(xml, "capacity", {"unit": "bytes"}).text = str(size)
        target = ET.SubElement(xml, "target")
        ET.SubElement(target, "format", {"type": "raw"})
        ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = f"{mode:o}"
        volume = _call(self.uri, f"make {name} in pool {POOL}", self.pool.createXML,
                       ET.tostring(xml, encoding="unicode"), 0)
        try:
            if size:
                stream = self.conn.newStream(0)
                volume.upload(stream, 0, size, 0)
                stream.sendAll(lambda _stream, n, _opaque: read(n), None)
                stream.finish()
            where = str(volume.path())
        except BaseException as e:
            with contextlib.suppress(libvirt.libvirtError):
                volume.delete(0)
            if isinstance(e, libvirt.libvirtError):
                raise VmError(f"could not copy {name} to libvirt at {self.uri}: "
                              f"{_message(e)}") from None
            raise
        if size:
            log.info("copied %s (%d bytes) to %s", name, size, self.uri)
        return where

    def delete(self, name: str) -> None:
        volume = self._lookup(name)
        if volume is not None:
            with contextlib.suppress(_libvirt().libvirtError):
                volume.delete(0)

    def delete_prefix(self, prefix: str) -> None:
        libvirt = _libvirt()
        with contextlib.suppress(libvirt.libvirtError):
            for name in self.pool.listVolumes():
                if name.startswith(prefix):
                    self.delete(name)


class StreamChannel:
    """A libvirt console stream as a channel (what ReportingVm reads and writes).

    The stream is non-blocking and read by libvirt's event loop: a blocking read on one
    stream would hold up every other call on the same connection (seen: a resume waited
    for ever behind the console's read)."""

    def __init__(self, conn: Any) -> None:
        libvirt = _libvirt()
        self.error = libvirt.libvirtError
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        self._chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.ended = threading.Event()
        self._events = (libvirt.VIR_STREAM_EVENT_READABLE, libvirt.VIR_STREAM_EVENT_ERROR
                        | libvirt.VIR_STREAM_EVENT_HANGUP)

    def watch(self) -> None:
        """Start reading (once the stream is opened on a console)."""
        readable, failed = self._events
        self.stream.eventAddCallback(readable | failed, self._on_event, None)

    def _on_event(self, stream: Any, events: int, _opaque: Any) -> None:
        readable, failed = self._events
        if events & readable:
            while True:
                try:
                    data = stream.recv(65536)
                except self.error:
                    self.end()
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:
                    self.end()
                    return
                self._chunks.put(data)
        if events & failed:
            self.end()

    def end(self) -> None:
        """No more to read: readers get b"" (the stream ended, or the VM did)."""
        if not self.ended.is_set():
            self.ended.set()
            self._chunks.put(b"")
            with contextlib.suppress(self.error):
                self.stream.eventRemoveCallback()

    def recv(self, size: int, /) -> bytes:
        """The next bytes the guest wrote (perhaps more than ``size``); b"" at the end."""
        data = self._chunks.get()
        if not data:
            self._chunks.put(b"")  # every later read ends too
        return data

    def sendall(self, data: bytes, /) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + SEND_TIMEOUT
        while view:
            if self.ended.is_set():
                raise OSError("the console stream has ended")
            if time.monotonic() > deadline:
                raise OSError(f"the guest read nothing for {SEND_TIMEOUT:g}s")
            try:
                sent = self.stream.send(bytes(view))
            except self.error as e:
                raise OSError(_message(e)) from None
            if sent == -2:  # its buffer is full
                time.sleep(0.005)
                continue
            view = view[sent:]

    def close(self) -> None:
        self.end()
        with contextlib.suppress(self.error):
            self.stream.abort()


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
        libvirt = _libvirt()
        with contextlib.suppress(libvirt.libvirtError):
            self._events = domain.connect().domainEventRegisterAny(
                domain, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        self._start()

    def _on_lifecycle(self, _conn: Any, _domain: Any, event: int, _detail: int,
                      _opaque: Any) -> None:
        if event in (_libvirt().VIR_DOMAIN_EVENT_STOPPED, _libvirt().VIR_DOMAIN_EVENT_CRASHED):
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
        libvirt = _libvirt()
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
            return self._unanswered(_message(e))
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
        libvirt = _libvirt()
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
                                  f"{_message(e)}") from None
                time.sleep(1)

    def pause(self) -> None:
        _call(self.uri, f"pause {self.domain_name}", self.domain.suspend)

    def resume(self) -> None:
        _call(self.uri, f"resume {self.domain_name}", self.domain.resume)
        self.send_control(f"{protocol.WAKE} {time.time_ns()}")

    def _release(self) -> None:
        self._console_stream.close()
        if self._events is not None:
            with contextlib.suppress(_libvirt().libvirtError):
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
