"""From inside a booted image: the app cannot leave its one job, and can still start
its own interpreter (subprocess, multiprocessing)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from krait.bench.http import first_answer, get
from krait.guest import confine
from krait.vmm.booted import booted

from .._echo import echo_server

pytestmark = pytest.mark.vm

PROBE_APP = """
    import ctypes, json, multiprocessing, os, socket, subprocess, sys

    libc = ctypes.CDLL(None, use_errno=True)
    MS_REMOUNT = 32

    def errno_of(call):
        try:
            call()
        except OSError as e:
            return e.errno
        return 0

    def c_call(result):
        if result != 0:
            raise OSError(ctypes.get_errno(), "call")

    def run_from_tmp():
        with open("/tmp/run", "w") as f:
            f.write("#!" + sys.executable + "\\nprint('ran')\\n")
        os.chmod("/tmp/run", 0o755)
        subprocess.run(["/tmp/run"], check=True)

    def status(field):
        with open("/proc/self/status") as f:
            return next(line.split()[1] for line in f if line.startswith(field + ":"))

    def square(x):
        return x * x

    def reach(address):
        # An errno, or what the service answered on three connections at once.
        host, _, port = address.rpartition(":")
        try:
            conns = [socket.create_connection((host, int(port)), timeout=5)
                     for _ in range(3)]
        except OSError as e:
            return e.errno if e.errno is not None else "timeout"
        for i, conn in enumerate(conns):
            conn.sendall(f"ping {i}".encode())
        return [conn.recv(100).decode() for conn in conns]

    def pool_map():
        # Closed and joined, as a pool should be: one left to the garbage collector is
        # terminated from wherever the last reference went, and can hang there.
        with multiprocessing.get_context("fork").Pool(2) as pool:
            result = pool.map(square, [1, 2, 3])
            pool.close()
            pool.join()
        return result

    def terminated():
        # A child the app forks dies of SIGTERM, as any process does (krait's own
        # handlers, the server's graceful stop, are not its).
        import time
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
        child.start()
        time.sleep(0.5)
        child.terminate()
        child.join(10)
        return child.exitcode

    def probe():
        os.mkdir("/tmp/m")
        return {
            "remount_root_rw": errno_of(lambda: c_call(libc.mount(None, b"/", None,
                                                                  MS_REMOUNT, None))),
            "mount_tmpfs": errno_of(lambda: c_call(libc.mount(b"none", b"/tmp/m", b"tmpfs",
                                                              0, None))),
            "packet_socket": errno_of(lambda: socket.socket(17, socket.SOCK_RAW, 0)),
            "raw_socket": errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                         socket.IPPROTO_ICMP)),
            "run_from_tmp": errno_of(run_from_tmp),
            "sethostname": errno_of(lambda: c_call(libc.sethostname(b"x", 1))),
            "cap_effective": status("CapEff"),
            "cap_bounding": status("CapBnd"),
            "no_new_privs": status("NoNewPrivs"),
            "seccomp": status("Seccomp"),
            "subprocess": subprocess.run([sys.executable, "-c", "print(6 * 7)"],
                                         capture_output=True, text=True).stdout.strip(),
            "pool": pool_map(),
            "terminated": terminated(),
            # The host's loopback and beyond: refused, but for the one declared service.
            "host_loopback": reach(f"10.0.2.2:{os.environ['HOST_PORT']}"),
            "outside": reach("192.0.2.1:80"),
            "declared": os.environ.get("KRAIT_CONNECT_ECHO"),
            "service": reach(os.environ["KRAIT_CONNECT_ECHO"]),
        }

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = json.dumps(probe()).encode() if scope["path"] == "/probe" else b"up"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
"""


def test_the_app_cannot_mount_use_raw_sockets_or_run_what_it_wrote(
        make_app: Callable[..., Path], build: Callable[[Path], Path],
        no_leftover_qemu: None) -> None:
    image = build(make_app(PROBE_APP, kind="asgi", entry="app:app",
                           extra='ports = [8080]\nmodules = ["multiprocessing.pool"]\n'
                           'connect = ["echo=127.0.0.1:7000"]\n'))
    with echo_server() as host_port, echo_server() as service_port, booted(
            image, env={"HOST_PORT": str(host_port)},
            connect=(f"echo=127.0.0.1:{service_port}",)) as vm:
        assert first_answer(vm.url("/"), time.monotonic() + 60) == (200, b"up")
        status, body = get(vm.url("/probe"), timeout=120)  # once: it forks, it is slow
        assert status == 200, body
        got = json.loads(body)
        qemu = psutil.Process(vm.vm.pid)
        qemu_user = qemu.username()
        with open(f"/proc/{qemu.pid}/status") as f:
            qemu_status = dict(line.split(":", 1) for line in f)
    # QEMU itself: under its seccomp filter, and not root when krait is.
    assert qemu_status["Seccomp"].strip() == "2"
    if os.geteuid() == 0:
        assert qemu_user == "nobody"
    kept = f"{sum(1 << c for c in confine.KEPT):016x}"
    assert got == {
        "remount_root_rw": 1, "mount_tmpfs": 1, "packet_socket": 1, "raw_socket": 1,
        "run_from_tmp": 13,  # EACCES: /tmp is noexec
        "sethostname": 1,
        "cap_effective": kept, "cap_bounding": kept, "no_new_privs": "1", "seccomp": "2",
        "subprocess": "42", "pool": [1, 4, 9], "terminated": -15,
        "host_loopback": 111, "outside": 111,  # ECONNREFUSED, from QEMU (restrict=on)
        "declared": "127.0.0.1:7000", "service": ["PING 0", "PING 1", "PING 2"],
    }, got
    assert not any("unconfined" in line for line in vm.lines)

