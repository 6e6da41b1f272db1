"""Many TCP connections over one stream: how a guest reaches the host services it declared.

QEMU's user network runs with ``restrict=on``: the guest reaches nothing outside but
one forward (``guestfwd``) at :data:`ADDRESS`, which QEMU carries to krait over a unix
socket. A guestfwd is one byte stream whoever in the guest connects to it, so every
connection the app opens travels in frames over the one stream::

    kind (1 byte) | channel (4 bytes) | length (2 bytes) | payload (length bytes)

The guest opens a channel with OPEN naming a declared service; the host connects to
that service and answers OPEN (or CLOSE, if it cannot). Only then does the guest send
the app's bytes (DATA), so the host never holds data for a connection it has not made.
CLOSE ends a channel, from either side. The host trusts none of it: an unknown name, too
many channels or a frame that is not krait's ends a channel or the tunnel, nothing else.

Imported by both sides, so standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

# The guest side of the forward: an address on QEMU's user network that nothing else uses.
ADDRESS = ("10.0.2.100", 1)
OPEN, DATA, CLOSE = 1, 2, 3
HEADER = struct.Struct("!BIH")
MAX_PAYLOAD = 0xFFFF
# Connections open at once through one VM's tunnel; more are refused (closed at once).
MAX_CHANNELS = 256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Channel:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.opened = threading.Event()
        self.refused = False

    def end(self) -> None:
        """Close the local connection, and let a pump still waiting to start go."""
        self.refused = True
        self.opened.set()
        _end(self.conn)


class Tunnel:
    """One end of the stream. ``connect`` (the host's end) turns a service name into a
    connected socket, or raises OSError; the guest's end has none and calls :meth:`add`."""

    def __init__(self, stream: socket.socket,
                 connect: Callable[[str], socket.socket] | None = None) -> None:
        self._stream = stream
        self._connect = connect
        self._channels: dict[int, Channel] = {}
        self._lock = threading.Lock()  # the channels
        self._writing = threading.Lock()  # one whole frame at a time on the stream
        self._next = 1
        # Connections the host is still making: bounded too (a guest may ask for many).
        self._opening = threading.BoundedSemaphore(MAX_CHANNELS)
        self.ended = threading.Event()

    # -- either end ---------------------------------------------------------------------
    def serve(self) -> None:
        """Read frames until the stream ends (or carries something that is not a frame);
        then end every channel."""
        try:
            while True:
                header = self._read(HEADER.size)
                if header is None:
                    break
                kind, channel, length = HEADER.unpack(header)
                payload = self._read(length) if length else b""
                if payload is None or not self._on_frame(kind, channel, payload):
                    break
        finally:
            self.close()

    def close(self) -> None:
        self.ended.set()
        _end(self._stream)  # first: it wakes a writer blocked on the stream
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.end()

    def _on_frame(self, kind: int, channel: int, payload: bytes) -> bool:
        if kind == DATA:
            with self._lock:
                ch = self._channels.get(channel)
            if ch is None:
                self._send(CLOSE, channel)  # a channel from before a snapshot, say
                return True
            try:
                ch.conn.sendall(payload)
            except OSError:
                self._drop(channel)
        elif kind == CLOSE:
            self._drop(channel, tell=False)
        elif kind == OPEN and self._connect is None:  # the host's answer: go ahead
            with self._lock:
                ch = self._channels.get(channel)
            if ch is not None:
                ch.opened.set()
        elif kind == OPEN:
            if not self._opening.acquire(blocking=False):
                self._send(CLOSE, channel)
                return True
            threading.Thread(target=self._open, args=(channel, payload), daemon=True).start()
        else:
            return False  # not a krait tunnel: end it
        return True

    def _read(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = self._stream.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _send(self, kind: int, channel: int, payload: bytes = b"") -> bool:
        frame = HEADER.pack(kind, channel, len(payload)) + payload
        try:
            with self._writing:
                self._stream.sendall(frame)
            return True
        except OSError:
            return False

    def _pump(self, channel: int, ch: Channel) -> None:
        """The local connection's bytes into frames, until it ends."""
        ch.opened.wait()
        try:
            while not ch.refused:
                data = ch.conn.recv(MAX_PAYLOAD)
                if not data or not self._send(DATA, channel, data):
                    break
        except OSError:
            pass
        self._drop(channel)

    def _drop(self, channel: int, tell: bool = True) -> None:
        with self._lock:
            ch = self._channels.pop(channel, None)
        if ch is None:
            return
        ch.end()
        if tell:
            self._send(CLOSE, channel)

    def _start(self, channel: int, ch: Channel) -> bool:
        with self._lock:
            if len(self._channels) >= MAX_CHANNELS or channel in self._channels:
                return False
            self._channels[channel] = ch
        threading.Thread(target=self._pump, args=(channel, ch), daemon=True).start()
        return True

    # -- the guest's end ----------------------------------------------------------------
    def add(self, name: str, conn: socket.socket) -> None:
        """Carry a connection the app made to the host's service ``name``."""
        with self._lock:
            channel, self._next = self._next, self._next % 0xFFFFFFFF + 1
        if self.ended.is_set() or not self._start(channel, Channel(conn)):
            _end(conn)
            return
        if not self._send(OPEN, channel, name.encode()):
            self._drop(channel, tell=False)

    # -- the host's end -----------------------------------------------------------------
    def _open(self, channel: int, name: bytes) -> None:
        assert self._connect is not None
        try:
            conn = self._connect(name.decode("ascii"))
        except (OSError, UnicodeDecodeError):
            self._send(CLOSE, channel)
            return
        finally:
            self._opening.release()
        ch = Channel(conn)
        ch.opened.set()
        if not self._start(channel, ch):
            _end(conn)
            self._send(CLOSE, channel)
            return
        self._send(OPEN, channel)


def _end(sock: socket.socket) -> None:
    """Close a socket another thread may be reading (shutdown wakes that thread)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def service_env(name: str) -> str:
    """The environment variable that tells the app where service ``name`` is."""
    return f"KRAIT_CONNECT_{name.upper()}"


class GuestLink:
    """The guest's end of the tunnel: connected at boot, and again should it break."""

    def __init__(self) -> None:
        self._tunnel: Tunnel | None = None
        self._lock = threading.Lock()

    def tunnel(self) -> Tunnel | None:
        with self._lock:
            if self._tunnel is None or self._tunnel.ended.is_set():
                try:
                    stream = socket.create_connection(ADDRESS, timeout=5)
                except OSError:
                    return None
                stream.settimeout(None)
                self._tunnel = Tunnel(stream)
                threading.Thread(target=self._tunnel.serve, daemon=True).start()
            return self._tunnel


def serve_in_guest(services: dict[str, int]) -> None:
    """Listen on 127.0.0.1:PORT for each service, as if it ran in the guest, and carry
    each connection to the host; tell the app where each one is."""
    import os

    link = GuestLink()
    link.tunnel()
    for name, port in services.items():
        server = socket.create_server(("127.0.0.1", port), backlog=128)
        threading.Thread(target=_accept, args=(server, name, link), daemon=True).start()
        os.environ[service_env(name)] = f"127.0.0.1:{port}"


def _accept(server: socket.socket, name: str, link: GuestLink) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            time.sleep(0.1)  # out of descriptors, say: wait for the app to close some
            continue
        tunnel = link.tunnel()
        if tunnel is None:
            _end(conn)
        else:
            tunnel.add(name, conn)
