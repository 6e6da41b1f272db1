"""Many TCP connections over one stream: how a guest reaches the host services it declared.

QEMU's user network runs with ``restrict=on``: the guest reaches nothing outside but
one forward (``guestfwd``) at :data:`ADDRESS`, which QEMU carries to krait over a unix
socket. A guestfwd is one byte stream whoever in the guest connects to it, so every
connection the app opens travels in frames over the one stream::

    kind (1 byte) | channel (4 bytes) | length (2 bytes) | payload (length bytes)

The guest opens a channel with OPEN naming a declared service; the host resolves the
service's host name *then* (so DNS changes are followed), connects and answers OPEN (or
CLOSE, if it cannot). Only then does the guest send the app's bytes (DATA). CLOSE ends a
channel, from either side.

Flow control is per channel, by credit, as in SSH and HTTP/2: each end may send a channel
at most :data:`WINDOW` bytes that the other end has not yet delivered; the other end
grants more (WINDOW frames) as its local socket takes them. The stream's reader only
queues what arrives, never waits on a local socket, so a connection whose reader stalls
stalls only itself, and what one channel may hold is bounded.

The host trusts none of it: an unknown name, too many channels, more data than it
granted or a frame that is not krait's ends a channel or the tunnel, nothing else.

Imported by both sides, so standard library only.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import struct
import threading
import time

# The guest side of the forward: an address on QEMU's user network that nothing else uses.
ADDRESS = ("10.0.2.100", 1)
OPEN, DATA, CLOSE, MORE = 1, 2, 3, 4
HEADER = struct.Struct("!BIH")
CREDIT = struct.Struct("!I")
MAX_PAYLOAD = 0xFFFF
# Bytes in flight per channel and direction. Bounds what the guest holds for an app that
# does not read (channels x WINDOW) and allows about WINDOW per round trip per stream.
WINDOW = 512 << 10
# Credit is granted back in pieces of at least this much (one small frame per piece).
GRANT_AT = WINDOW // 4
# Connections open at once through one VM's tunnel; more are refused (closed at once).
MAX_CHANNELS = 256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


class Channel:
    """One connection: the local socket, the credit to send to the other end, and what
    the other end sent that the local socket has not taken yet."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.opened = threading.Event()
        self.ended = False
        self.finishing = False  # the other end closed: deliver what it sent, then end
        self._cond = threading.Condition()
        self._credit = WINDOW
        self._inbox: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._delivering = False  # the delivering thread holds bytes it is sending
        self._owed = 0  # credit for bytes delivered, not yet granted to the other end

    def finish(self) -> None:
        with self._cond:
            self.finishing = True
            self._cond.notify_all()

    def end(self) -> None:
        """Close the local connection, and let its threads go."""
        with self._cond:
            self.ended = True
            self._cond.notify_all()
        self.opened.set()
        _end(self.conn)

    # -- out: the local socket's bytes, as far as the credit goes -----------------------
    def take_credit(self) -> int:
        """Wait for credit to send; 0 once the channel has ended."""
        with self._cond:
            while self._credit <= 0 and not self.ended:
                self._cond.wait()
            return 0 if self.ended else min(self._credit, MAX_PAYLOAD)

    def spend(self, n: int) -> None:
        with self._cond:
            self._credit -= n

    def grant(self, n: int) -> bool:
        """The other end took ``n`` more bytes; False if that is more than was sent."""
        with self._cond:
            if self._credit + n > WINDOW:
                return False
            self._credit += n
            self._cond.notify_all()
            return True

    # -- in: what the other end sent, for the local socket ------------------------------
    def take(self, data: bytes) -> bool:
        """Data from the other end for the local socket: sent at once if nothing waits
        ahead of it and the socket takes it (no thread to wake: under emulation a hand-off
        costs more than the copy), else held for the delivering thread. False if the
        other end sent beyond its credit.

        The stream's reader calls this, and it never waits on anything but this lock:
        the credit it owes is sent by the delivering thread (a reader that wrote to the
        stream could wait on a peer whose reader waits on it)."""
        with self._cond:
            if self._queued + len(data) > WINDOW:
                return False
            if self._inbox or self._delivering:
                self._hold(data)
                return True
        # Nothing ahead of it, and only the stream's reader (this thread) adds more.
        try:
            sent = self.conn.send(data, socket.MSG_DONTWAIT)
        except OSError:  # full (BlockingIOError) or gone: the delivering thread sees to it
            sent = 0
        with self._cond:
            if sent < len(data):
                self._hold(data[sent:])
            self._owe(sent)
        return True

    def _hold(self, data: bytes) -> None:
        self._inbox.append(data)
        self._queued += len(data)
        self._cond.notify_all()

    def _owe(self, n: int) -> None:
        self._owed += n
        if self._owed >= GRANT_AT:
            self._cond.notify_all()

    def next_delivery(self) -> tuple[bytes | None, int, bool]:
        """What the delivering thread does next: (bytes for the local socket or None,
        credit to grant now, whether to stop). It waits for held bytes, enough credit
        owed, or the channel's end; credit owed below GRANT_AT may wait (the other end
        still has at least WINDOW - GRANT_AT to send with)."""
        with self._cond:
            while (not self._inbox and self._owed < GRANT_AT and not self.ended
                   and not self.finishing):
                self._cond.wait()
            owed, self._owed = self._owed, 0
            if self.ended or not self._inbox:
                return None, owed, self.ended or self.finishing
            self._delivering = True
            return self._inbox.popleft(), owed, False

    def delivered(self, n: int) -> None:
        with self._cond:
            self._queued -= n
            self._delivering = False
            self._owed += n


class Tunnel:
    """One end of the stream. ``connect`` (the host's end) turns a service name into a
    connected socket, or raises OSError; the guest's end has none and calls :meth:`add`.
    ``log`` gets a line for each connection the host's end refuses or cannot make."""

    def __init__(self, stream: socket.socket,
                 connect: Callable[[str], socket.socket] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self._stream = stream
        self._reader = stream.makefile("rb", buffering=MAX_PAYLOAD * 4)
        self._connect = connect
        self._log = log or (lambda line: None)
        self._channels: dict[int, Channel] = {}
        self._lock = threading.Lock()  # the channels
        self._writing = threading.Lock()  # one whole frame at a time on the stream
        self._next = 1
        # Connections the host is still making: bounded too (a guest may ask for many).
        self._opening = threading.BoundedSemaphore(MAX_CHANNELS)
        self._refused = 0  # since the last line about it: one line per burst, not 10,000
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
        if kind in (DATA, MORE):
            with self._lock:
                ch = self._channels.get(channel)
            if ch is None:
                if kind == DATA:
                    self._send(CLOSE, channel)  # a channel from before a snapshot, say
                return True
            if kind == DATA:
                ok = ch.take(payload)
            else:
                ok = len(payload) == CREDIT.size and ch.grant(CREDIT.unpack(payload)[0])
            if not ok:  # beyond what it was granted: that channel ends, not the others
                self._drop(channel)
        elif kind == CLOSE:
            with self._lock:
                ch = self._channels.pop(channel, None)
            if ch is not None:
                ch.finish()
        elif kind == OPEN and self._connect is None:  # the host's answer: go ahead
            with self._lock:
                ch = self._channels.get(channel)
            if ch is not None:
                ch.opened.set()
        elif kind == OPEN:
            if not self._opening.acquire(blocking=False):
                self._refuse(channel, f"more than {MAX_CHANNELS} connections at once")
                return True
            threading.Thread(target=self._open, args=(channel, payload), daemon=True).start()
        else:
            return False  # not a krait tunnel: end it
        return True

    def _read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes of the stream, or None once it ends. Buffered: a frame's
        header and payload are one read of the kernel's, not two (it counts under
        emulation)."""
        try:
            data = self._reader.read(n)
        except (OSError, ValueError):  # ValueError: closed by close() meanwhile
            return None
        return data if len(data) == n else None

    def _send(self, kind: int, channel: int, payload: bytes = b"") -> bool:
        frame = HEADER.pack(kind, channel, len(payload)) + payload
        try:
            with self._writing:
                self._stream.sendall(frame)
            return True
        except OSError:
            return False

    def _pump(self, channel: int, ch: Channel) -> None:
        """The local connection's bytes into frames, as far as the other end's credit
        goes, until it ends."""
        ch.opened.wait()
        try:
            while (n := ch.take_credit()) > 0:
                data = ch.conn.recv(n)
                if not data:
                    break
                ch.spend(len(data))
                if not self._send(DATA, channel, data):
                    break
        except OSError:
            pass
        self._drop(channel)

    def _deliver(self, channel: int, ch: Channel) -> None:
        """What the other end sent, into the local connection; credit back as it goes."""
        while True:
            data, owed, stop = ch.next_delivery()
            if owed and not self._send(MORE, channel, CREDIT.pack(owed)):
                return
            if stop:
                break
            if data is None:
                continue
            try:
                ch.conn.sendall(data)
            except OSError:
                self._drop(channel)
                return
            ch.delivered(len(data))
        if ch.finishing and not ch.ended:
            ch.end()

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
        for work in (self._pump, self._deliver):
            threading.Thread(target=work, args=(channel, ch), daemon=True).start()
        return True

    def _refuse(self, channel: int, why: str) -> None:
        self._send(CLOSE, channel)
        self._refused += 1
        if self._refused == 1 or self._refused % 1000 == 0:
            self._log(f"connection refused: {why} ({self._refused} so far)")

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
        except (OSError, UnicodeDecodeError) as e:
            self._send(CLOSE, channel)
            self._log(f"connection to {name[:80].decode('ascii', 'replace')!r} failed: {e}")
            return
        finally:
            self._opening.release()
        ch = Channel(conn)
        ch.opened.set()
        if not self._start(channel, ch):
            _end(conn)
            self._refuse(channel, f"more than {MAX_CHANNELS} connections at once")
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


def serve_in_guest(services: dict[str, list[object]]) -> None:
    """For each service ``name: [address, port, host]``, listen on address:port as if it
    ran in the guest and carry each connection to the host; tell the app where a service
    with a NAME= key is ($KRAIT_CONNECT_NAME=host:port, host being what the app uses)."""
    import os

    link = GuestLink()
    link.tunnel()
    for name, (address, port, host) in services.items():
        server = socket.create_server((str(address), int(str(port))), backlog=128)
        threading.Thread(target=_accept, args=(server, name, link), daemon=True).start()
        if name.isidentifier():
            os.environ[service_env(name)] = f"{host}:{port}"


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
