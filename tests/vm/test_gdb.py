"""`krait run --gdb`: QEMU waits, paused, for a debugger on loopback; continuing boots."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.vmm.ports import free_port

from .conftest import krait_running

pytestmark = pytest.mark.vm


def packet(body: str) -> bytes:
    """A gdb remote-serial-protocol packet: $body#checksum."""
    return f"${body}#{sum(body.encode()) % 256:02x}".encode()


def test_run_gdb_waits_paused_for_a_debugger(make_app: Callable[..., Path],
                                             build: Callable[[Path], Path],
                                             no_leftover_qemu: None) -> None:
    image = build(make_app("def main():\n    print('BOOTED-UNDER-GDB')\n"))
    port = free_port()
    with krait_running("run", image, "--gdb", port) as proc:
        deadline = time.monotonic() + 30
        while True:
            try:
                gdb = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        with gdb:
            gdb.sendall(packet("?"))  # why are you stopped?
            reply = b""
            while b"#" not in reply:
                reply += gdb.recv(256)
            assert reply.startswith(b"+$T05") or reply.startswith(b"+$S05"), reply
            time.sleep(1)
            assert proc.poll() is None  # paused: the app has not run
            gdb.sendall(b"+" + packet("c"))  # continue
            out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "BOOTED-UNDER-GDB" in out
    assert f"target remote 127.0.0.1:{port}" in err
    # The kernel it names for gdb's symbols is the ELF it booted.
    [command] = [line.split() for line in err.splitlines() if line.startswith("  gdb ")]
    assert Path(command[1]).read_bytes()[:4] == b"\x7fELF"
