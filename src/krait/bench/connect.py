"""``krait bench connect``: the tunnel that carries a guest's connections to the services
it declared, as a network path: one bulk download, small round trips, many connections
at once; the guest's numbers against the very same client run on the host.

The guest reaches the host's server by a declared name (``tunnel.bench``), so name
resolution inside the guest is on the path too.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from krait.bench.apps import probe_app
from krait.bench.result import Result, summarize
from krait.errors import KraitError
from krait.kernel import Kernel
from krait.vmm.booted import booted

NAME, GUEST_PORT = "tunnel.bench", 7000
MARK, END = "KRAIT-BENCH-CONNECT ", "KRAIT-BENCH-CONNECT-END"
CHUNK = b"\0" * (1 << 20)


def measure(host: str, port: int, bulk_mib: int, runs: int, pings: int,
            parallel: int, parallel_mib: int) -> dict[str, Any]:
    """What one client sees of a server (``_bench_answer``): MB/s of each bulk download,
    seconds of each small round trip, MB/s of each of ``parallel`` downloads at once.
    Standard library only: the guest runs this very function."""
    import contextlib
    import socket
    import threading
    import time

    def download(size: int) -> float:
        with socket.create_connection((host, port), timeout=120) as s:
            s.sendall(b"bulk %d\n" % size)
            started, left = time.perf_counter(), size
            while left > 0:
                got = s.recv_into(buffer, min(left, len(buffer)))
                if not got:
                    raise OSError(f"the download ended {left} bytes short")
                left -= got
            return size / 1e6 / (time.perf_counter() - started)

    buffer = bytearray(1 << 20)
    refusals = []
    refusals_started = time.perf_counter()
    for _ in range(100):  # a name nobody declared: "not known", without asking anyone
        started = time.perf_counter()
        with contextlib.suppress(socket.gaierror):
            socket.getaddrinfo("undeclared.example.test", 443)
        refusals.append(time.perf_counter() - started)
    refusals_total = time.perf_counter() - refusals_started
    bulk = [download(bulk_mib << 20) for _ in range(runs)]
    trips = []
    trips_started = time.perf_counter()
    with socket.create_connection((host, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"ping\n")
        for _ in range(pings):
            started = time.perf_counter()
            s.sendall(b"x" * 64)
            got = 0
            while got < 64:
                chunk = s.recv(64 - got)
                if not chunk:
                    raise OSError("the server closed the connection")
                got += len(chunk)
            trips.append(time.perf_counter() - started)
    trips_total = time.perf_counter() - trips_started
    clock = "unknown"  # a coarse clock (jiffies) makes single round trips read 0 or 10 ms
    source = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
    with contextlib.suppress(OSError), open(source) as f:
        clock = f.read().strip()
    rates: list[float] = []
    errors: list[str] = []

    def one() -> None:
        local = bytearray(1 << 16)
        try:
            with socket.create_connection((host, port), timeout=120) as s:
                s.sendall(b"bulk %d\n" % (parallel_mib << 20))
                started, left = time.perf_counter(), parallel_mib << 20
                while left > 0:
                    got = s.recv_into(local, min(left, len(local)))
                    if not got:
                        raise OSError("ended short")
                    left -= got
                rates.append((parallel_mib << 20) / 1e6 / (time.perf_counter() - started))
        except OSError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(parallel)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = time.perf_counter() - started
    return {"bulk_mb_s": bulk, "round_trip_s": trips, "parallel_mb_s": rates,
            "undeclared_name_s": refusals, "undeclared_names_total_s": refusals_total,
            "round_trips_total_s": trips_total,
            "clocksource": clock,
            "parallel_errors": errors, "parallel_seconds": together}


# Annotations stay text: the guest has no typing to import for them.
PROBE = ("from __future__ import annotations\n\n"
         + textwrap.dedent(inspect.getsource(measure))) + textwrap.dedent(f"""

    def main():
        import json, os
        got = json.dumps(measure({NAME!r}, {GUEST_PORT}, **json.loads(os.environ["BENCH"])),
                         separators=(",", ":"))  # no spaces a line could lose
        for i in range(0, len(got), 2000):  # the console cuts lines at 4 KiB
            print({MARK!r} + got[i:i + 2000], flush=True)
        print({END!r}, flush=True)
        return 0
""")


@contextlib.contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that runs ``handle`` on each connection in a thread of
    its own (and closes it after); yields its port, closed when the block ends."""
    server = socket.create_server(("127.0.0.1", 0), backlog=256)

    def run(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client that leaves mid-answer
            handle(conn)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _bench_answer(conn: socket.socket) -> None:
    """``bulk N`` is answered with N bytes; ``ping`` echoes 64-byte messages until the
    client closes."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 64:  # unbuffered: the rest is data
        byte = conn.recv(1)
        if not byte:
            return
        line += byte
    command = line.split()
    if command[:1] == [b"bulk"] and len(command) == 2 and command[1].isdigit():
        left = int(command[1])
        while left > 0:
            left -= conn.send(CHUNK[:left])
    elif command == [b"ping"]:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(64):
            conn.sendall(data)


def _summary(got: dict[str, Any]) -> dict[str, Any]:
    trips_ms = sorted(t * 1000 for t in got["round_trip_s"])
    refused_ms = sorted(t * 1000 for t in got["undeclared_name_s"])
    rates = got["parallel_mb_s"]
    return {
        "clocksource": got["clocksource"],
        "bulk_mb_s": {"samples": [round(r, 2) for r in got["bulk_mb_s"]],
                      **summarize(got["bulk_mb_s"])},
        "round_trip_ms": {"mean": round(got["round_trips_total_s"] * 1000 / len(trips_ms), 3),
                          "p50": round(trips_ms[len(trips_ms) // 2], 3),
                          "p99": round(trips_ms[int(len(trips_ms) * 0.99) - 1], 3),
                          "min": round(trips_ms[0], 3), "max": round(trips_ms[-1], 3)},
        "undeclared_name_ms": {"mean": round(got["undeclared_names_total_s"] * 1000
                                             / len(refused_ms), 3),
                               "first": round(got["undeclared_name_s"][0] * 1000, 3),
                               "median": round(refused_ms[len(refused_ms) // 2], 3),
                               "max": round(refused_ms[-1], 3)},
        "parallel": {"connections_done": len(rates), "errors": got["parallel_errors"][:5],
                     "seconds": round(got["parallel_seconds"], 2),
                     **({"slowest_mb_s": round(min(rates), 3),
                         "fastest_mb_s": round(max(rates), 3)} if rates else {})},
    }


def bench_connect(kernel: Kernel, accel: str, bulk_mib: int = 100, runs: int = 3,
                  pings: int = 1000, parallel: int = 64, parallel_mib: int = 1) -> Result:
    params = {"bulk_mib": bulk_mib, "runs": runs, "pings": pings, "parallel": parallel,
              "parallel_mib": parallel_mib}
    with tempfile.TemporaryDirectory(prefix="krait-connect-") as tmp, \
            tcp_server(_bench_answer) as port:
        host = _summary(measure("127.0.0.1", port, **params))
        image = probe_app(Path(tmp) / "probe", PROBE, 'name = "connect-probe"\n'
                          f'entry = "app:main"\nconnect = ["{NAME}:{GUEST_PORT}"]\n', kernel)
        with booted(image, env={"BENCH": json.dumps(params)}, memory=128,
                    connect=(f"{NAME}=127.0.0.1:{port}",)) as vm:
            deadline = time.monotonic() + 1200
            while END not in vm.lines:
                if time.monotonic() > deadline or vm.vm.wait(0.2) is not None:
                    break
        if END not in vm.lines:
            raise KraitError("the probe did not print its numbers: " + " | ".join(vm.lines[-5:]))
        guest = _summary(json.loads("".join(x[len(MARK):] for x in vm.lines
                                            if x.startswith(MARK))))
    return Result("connect-tunnel-bulk", "MB/s", guest["bulk_mb_s"]["samples"], accel,
                  params={**params, "path": "guest -> guestfwd (QEMU user network) -> "
                          "krait's tunnel -> 127.0.0.1, reached by a declared name"},
                  extra={"guest": guest, "host": host,
                         "what_host_is": "the same client on the host, straight to the server"})
