"""Host ports: one that is free, and a check that one is (for the forwards of every
backend, and the process backend's own listening)."""

from __future__ import annotations

import socket

from krait.errors import VmError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for host forwards)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hold_port(addr: str, port: int) -> socket.socket:
    """The port, bound (not listening: a connection is refused) so that no other program
    takes it until it is closed; refused if something listens there. As QEMU's forwards
    (and the app's own server, for --target process) bind with SO_REUSEADDR, so does
    this: connections of a previous run still in TIME_WAIT do not make the port taken."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
    except OSError:
        s.close()
        raise VmError(f"port {addr}:{port} is already in use on this machine",
                      hint=f"pick another host port, e.g. -p {port + 1}:GUEST_PORT, "
                      "or stop what is listening there") from None
    return s


def check_port_free(addr: str, port: int) -> None:
    """Refuse a port something listens on (see hold_port)."""
    hold_port(addr, port).close()
