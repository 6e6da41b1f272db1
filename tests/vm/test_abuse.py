"""Hostile clients against a real guest: it answers them and keeps serving."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest

from krait.bench.http import first_answer
from krait.vmm.booted import booted

pytestmark = pytest.mark.vm


def post(port: int, size: int, expect: bool) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Length": str(size)}
    if expect:
        headers["Expect"] = "100-continue"
    try:
        conn.putrequest("POST", "/")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if not expect:
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(size >> 20):
                    conn.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and stopped reading: the answer is waiting
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_64_mb_post_gets_413_slow_clients_408_and_the_guest_keeps_serving(
        hello_image: Path, no_leftover_qemu: None) -> None:
    with booted(hello_image) as vm:
        port = vm.port
        assert post(port, 64 << 20, expect=True) == 413
        assert post(port, 64 << 20, expect=False) == 413
        # A slowloris client: headers that never end are answered 408 and closed.
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            assert slow.recv(100).startswith(b"HTTP/1.1 408")
        status, body = first_answer(vm.url("/"), time.monotonic() + 30)
        assert status == 200 and body.startswith(b"Hello from a krait unikernel")
        assert vm.vm.alive(), "the guest died"
    assert not any("Kernel panic" in line for line in vm.lines), vm.lines[-20:]
