"""A real TCP service on the host's loopback, for tests of what a guest may reach."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from krait.bench.connect import tcp_server


def _upper(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data.upper())


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """Answers each line with the line upper-cased, on any number of connections."""
    with tcp_server(_upper) as port:
        yield port
