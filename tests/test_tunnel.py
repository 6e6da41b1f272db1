"""The tunnel that carries a guest's connections to its declared services: both ends in
this process, over a socket pair, to a real TCP service on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from krait.config.settings import Service
from krait.guest import tunnel
from krait.guest.tunnel import CLOSE, CREDIT, DATA, HEADER, MORE, OPEN, Tunnel
from krait.vmm.qemu import service_connector

from ._echo import echo_server


@contextlib.contextmanager
def linked(port: int) -> Iterator[Tunnel]:
    """The guest's end (yielded) and the host's, which may reach only `echo`."""
    guest_stream, host_stream = socket.socketpair()
    host = Tunnel(host_stream, service_connector((Service("echo", "127.0.0.1", port, 7),)))
    guest = Tunnel(guest_stream)
    for end in (host, guest):
        threading.Thread(target=end.serve, daemon=True).start()
    try:
        yield guest
    finally:
        guest.close()
        host.close()


def app_connection(guest: Tunnel, name: str = "echo") -> socket.socket:
    """What the app holds: one end of a connection the guest's listener accepted."""
    app, accepted = socket.socketpair()
    app.settimeout(5)
    guest.add(name, accepted)
    return app


def recv_all(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_many_connections_at_once_each_get_their_own_answers() -> None:
    big = bytes(range(256)) * 1024  # more than one frame
    with echo_server() as port, linked(port) as guest:
        apps = [app_connection(guest) for _ in range(20)]
        answers: dict[int, bytes] = {}

        def talk(i: int, app: socket.socket) -> None:
            message = f"conn {i}:".encode() + big
            # Sent while the answer is read, as a client of a real service would.
            threading.Thread(target=app.sendall, args=(message,), daemon=True).start()
            answers[i] = recv_all(app, len(message))

        talks = [threading.Thread(target=talk, args=item) for item in enumerate(apps)]
        for t in talks:
            t.start()
        for t in talks:
            t.join(30)
        for i, app in enumerate(apps):
            assert answers.get(i) == f"conn {i}:".encode().upper() + big.upper()
            app.close()


def test_an_undeclared_name_or_a_service_that_is_down_closes_only_that_connection() -> None:
    with echo_server() as port, linked(port) as guest:
        other = app_connection(guest, "postgres")
        assert other.recv(10) == b""  # closed: nothing declared by that name
        good = app_connection(guest)
        good.sendall(b"still here")
        assert recv_all(good, 10) == b"STILL HERE"
    from krait.vmm.ports import free_port

    with linked(free_port()) as guest:  # nothing listens there
        assert app_connection(guest).recv(10) == b""


def test_a_closed_app_connection_closes_the_service_side() -> None:
    closed = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        if conn.recv(10) == b"":
            closed.set()

    threading.Thread(target=serve, daemon=True).start()
    with server, linked(server.getsockname()[1]) as guest:
        app_connection(guest).close()
        assert closed.wait(5)


@pytest.mark.parametrize("frame", [
    HEADER.pack(9, 1, 0),  # no such kind
    HEADER.pack(DATA, 1, 10) + b"short",  # cut off: the stream then ends
])
def test_a_stream_that_is_not_a_tunnel_ends_the_tunnel(frame: bytes) -> None:
    guest, host_stream = socket.socketpair()
    host = Tunnel(host_stream, service_connector(()))
    done = threading.Thread(target=host.serve)
    done.start()
    guest.sendall(frame)
    guest.shutdown(socket.SHUT_WR)
    done.join(5)
    assert not done.is_alive() and host.ended.is_set()
    guest.close()


def test_a_guest_cannot_open_more_than_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tunnel, "MAX_CHANNELS", 3)
    with echo_server() as port:
        guest, host_stream = socket.socketpair()
        host = Tunnel(host_stream, service_connector((Service("echo", "127.0.0.1", port, 7),)))
        threading.Thread(target=host.serve, daemon=True).start()
        guest.settimeout(5)
        for channel in range(1, 6):
            guest.sendall(HEADER.pack(OPEN, channel, 4) + b"echo")
        answers = [HEADER.unpack(recv_all(guest, HEADER.size))[::2] for _ in range(5)]
        assert sorted(answers) == [(OPEN, 0)] * 3 + [(CLOSE, 0)] * 2
        # DATA for a channel the host does not have: told to close it, nothing else.
        guest.sendall(HEADER.pack(DATA, 99, 3) + b"abc")
        assert HEADER.unpack(recv_all(guest, HEADER.size)) == (CLOSE, 99, 0)
        host.close()
        guest.close()


def test_a_connection_whose_reader_stalls_does_not_stall_the_others() -> None:
    """Without flow control per connection the stream's reader waits on the stalled
    app's full socket, and every other connection waits behind it."""
    chunk = b"x" * 65536
    with echo_server() as port, linked(port) as guest:
        stalled = app_connection(guest)

        def flood() -> None:  # far more than any buffer holds; never reads an answer
            with contextlib.suppress(OSError):  # closed at the end of the test
                for _ in range(160):
                    stalled.sendall(chunk)

        threading.Thread(target=flood, daemon=True).start()
        busy = app_connection(guest)
        busy.settimeout(10)
        for _ in range(80):  # 5 MiB there and back, one chunk at a time
            busy.sendall(chunk)
            assert recv_all(busy, len(chunk)) == chunk.upper()
        stalled.close()


def test_a_peer_that_sends_beyond_its_credit_loses_only_that_channel() -> None:
    with echo_server() as port:
        guest, host_stream = socket.socketpair()
        host = Tunnel(host_stream, service_connector((Service("echo", "127.0.0.1", port, 7),)))
        threading.Thread(target=host.serve, daemon=True).start()
        guest.settimeout(5)
        guest.sendall(HEADER.pack(OPEN, 1, 4) + b"echo")
        assert HEADER.unpack(recv_all(guest, HEADER.size)) == (OPEN, 1, 0)
        # MORE credit than was ever spent: the channel ends, the tunnel does not.
        guest.sendall(HEADER.pack(MORE, 1, 4) + CREDIT.pack(1))
        assert HEADER.unpack(recv_all(guest, HEADER.size)) == (CLOSE, 1, 0)
        assert not host.ended.is_set()
        host.close()
        guest.close()
