"""The host half of the control protocol, whatever runs the VM: a console to read, and a
control channel on which the guest reports (ready, its boot timeline, a crash, its exit
status) and is asked to stop (:mod:`krait.guest.protocol` is the guest's half).

:class:`ReportingVm` reads and answers both; a backend says only where they come from
and how the VM ends. :class:`ChildVm` is a VM that is a child process of krait's: QEMU
(:class:`krait.vmm.qemu.QemuVm`) or an app process (:mod:`krait.vmm.process`). A
libvirt domain (:mod:`krait.vmm.libvirt`) is reached through libvirt's streams instead."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from krait.guest import protocol
from krait.vmm.base import Vm, VmResult, VmSpec
from krait.vmm.child import child_ref
from krait.vmm.console import ConsoleLog, Lines

log = logging.getLogger("krait")


class Channel(Protocol):
    """The control channel, as a socket offers it (a libvirt stream is wrapped to)."""

    def recv(self, size: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def close(self) -> None: ...


class ReportingVm(Vm):
    vmm_name = "the VMM"

    def __init__(self, spec: VmSpec, on_console: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self._console: deque[str] = deque(maxlen=60)
        self._stderr: deque[str] = deque(maxlen=20)
        self._ready = threading.Event()
        self._ended = threading.Event()
        self._status: int | None = None
        self._crashed = False
        # When the guest did each step of its boot (seconds since its kernel started).
        self.timeline: dict[str, float] = {}
        self.started_at = time.monotonic()
        self.ready_at: float | None = None  # time.monotonic() of the first "ready"
        self._control: Channel | None = None
        self.on_console = on_console
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_control, daemon=True),
            threading.Thread(target=self._read_console, daemon=True),
        ]

    def _start(self) -> None:
        """Start reading (once the subclass has set itself up)."""
        for t in self._threads:
            t.start()

    # -- what a backend says --------------------------------------------------------------
    def _open_control(self) -> Channel | None:
        """The control channel, connected; None if the VM ended first."""
        raise NotImplementedError

    def _console_chunks(self) -> Iterator[bytes]:
        """The console's bytes as they come, until the VM ends."""
        raise NotImplementedError

    def _vmm_messages(self) -> Iterable[str]:
        """What the VMM itself says (its stderr), line by line, if krait sees it."""
        return ()

    def poll(self) -> int | None:
        """The VMM's exit status if it has ended, else None."""
        raise NotImplementedError

    def _wait_exit(self, timeout: float | None) -> int | None:
        """Wait for the VMM to end: its exit status, or None after ``timeout``."""
        raise NotImplementedError

    def _on_ready(self) -> None:
        """The guest said it is ready, the first time; called before anyone waiting for
        that hears of it."""

    def _release(self) -> None:
        """What the subclass holds beyond the VM (sockets, locks, folders)."""

    def alive(self) -> bool:
        return self.poll() is None

    # -- reading what the VM says -------------------------------------------------------
    def _read_console(self) -> None:
        out = ConsoleLog(self.spec.console_log) if self.spec.console_log else None
        lines = Lines()
        chunks = self._console_chunks()
        try:
            while True:
                data = next(chunks, b"")
                if out is not None and data:
                    out.write(data)
                for line in lines.feed(data) if data else lines.rest():
                    self._console.append(line)
                    if self.on_console:
                        self.on_console(line)
                if not data:
                    return
        finally:
            if out is not None:
                out.close()

    def _read_stderr(self) -> None:
        for line in self._vmm_messages():
            log.debug("qemu: %s", line)
            self._stderr.append(line)

    def _read_control(self) -> None:
        sock = self._open_control()
        if sock is None:
            self._ended.set()
            return
        with self._lock:
            self._control = sock
        buf = b""
        skipping = False  # inside a line that was too long: drop it up to its newline
        while True:
            try:
                chunk = sock.recv(256)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                if not skipping:
                    self._on_message(line.decode(errors="replace").strip())
                skipping = False
            if len(buf) > protocol.MAX_LINE:
                if not skipping:
                    log.warning("dropped a control message over %d bytes", protocol.MAX_LINE)
                buf, skipping = b"", True
        self._ended.set()

    def _on_message(self, message: str) -> None:
        word, _, arg = message.partition(" ")
        if word == protocol.READY:
            if not self._ready.is_set():
                self.ready_at = time.monotonic()
                self._on_ready()
            self._ready.set()
        elif word == protocol.CRASH:
            self._crashed = True
        elif word == protocol.EXIT:
            # Anything but 0-255 is no status at all: the run ends as a failure.
            self._status = protocol.parse_status(arg)
        elif word == protocol.TIMELINE:
            for item in arg.split():
                step, _, seconds = item.partition("=")
                try:
                    self.timeline[step] = float(seconds)
                except ValueError:
                    continue

    # -- the Vm interface -----------------------------------------------------------------
    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return True
            if self.poll() is not None:
                return self._ready.is_set()
        return False

    def request_stop(self) -> None:
        with self._lock:
            sock = self._control
        if sock is not None:
            try:
                sock.sendall(f"{protocol.STOP}\n".encode())
                return
            except OSError:
                pass
        self.kill()

    def send_control(self, message: str, timeout: float = 5.0) -> bool:
        """Write one line to the guest's control port, once it is connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll() is None:
            with self._lock:
                sock = self._control
            if sock is not None:
                try:
                    sock.sendall(f"{message}\n".encode())
                    return True
                except OSError:
                    return False
            time.sleep(0.005)
        return False

    def wait(self, timeout: float | None = None) -> VmResult | None:
        code = self._wait_exit(timeout)
        if code is None:
            return None
        self._ended.wait(2)
        for t in self._threads:
            t.join(2)
        self._cleanup()
        return self._result(code)

    def console_tail(self) -> str:
        return "\n".join(self._console)

    def _result(self, code: int) -> VmResult:
        tail = self.console_tail()
        if self._status is not None:
            status = self._status
            reason = (f"the app crashed (exit status {status})" if self._crashed
                      else f"the app exited with status {status}")
            return VmResult(status, self._crashed, code, tail, reason)
        if "Kernel panic" in tail:
            panic = next(line for line in tail.splitlines() if "Kernel panic" in line)
            reason = f"the guest kernel panicked: {panic.split('Kernel panic - ')[-1].strip()}"
        elif code < 0:
            reason = "the VM was stopped"
        elif code != 0:
            reason = (f"{self.vmm_name} failed (status {code}): "
                      + " ".join(self._stderr)[-300:])
        else:
            reason = "the VM ended without reporting an exit status"
        return VmResult(None, False, code, tail, reason)

    def _cleanup(self) -> None:
        with self._lock:
            if self._control is not None:
                self._control.close()
        self._release()



class ChildVm(ReportingVm):
    """A VM that is a child process of krait's: its stdout is the console."""

    def __init__(self, spec: VmSpec, proc: subprocess.Popen[bytes],
                 on_console: Callable[[str], None] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(spec, on_console)
        self.proc = proc
        self.pid = proc.pid
        self.ref = child_ref(proc.pid, workdir)

    def _console_chunks(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            yield data

    def _vmm_messages(self) -> Iterator[str]:
        if self.proc.stderr is None:  # merged into the console
            return
        for raw in self.proc.stderr:
            yield raw.decode(errors="replace").rstrip()

    def poll(self) -> int | None:
        return self.proc.poll()

    def _wait_exit(self, timeout: float | None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def __del__(self) -> None:  # a VM must never outlive its owner by accident
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
