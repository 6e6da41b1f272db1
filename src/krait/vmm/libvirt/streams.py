"""The console and the control port through libvirt's streams, as the channel the
control protocol reads (krait.vmm.reporting.Channel)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

from krait.vmm.libvirt.connection import binding, error_message

log = logging.getLogger("krait")

SEND_TIMEOUT = 10.0  # a control message the guest does not take in this long fails


class StreamChannel:
    """A libvirt console stream as a channel (what ReportingVm reads and writes).

    The stream is non-blocking and read by libvirt's event loop: a blocking read on one
    stream would hold up every other call on the same connection (seen: a resume waited
    for ever behind the console's read)."""

    def __init__(self, conn: Any) -> None:
        libvirt = binding()
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
                raise OSError(error_message(e)) from None
            if sent == -2:  # its buffer is full
                time.sleep(0.005)
                continue
            view = view[sent:]

    def close(self) -> None:
        self.end()
        with contextlib.suppress(self.error):
            self.stream.abort()
