"""``krait bench routes``: many apps behind one port, all scaled to zero: how long the
prewarm takes at start, and each route's first request (a wake, if prewarm did its job).

One `krait serve --routes` child with ``count`` routes by host name (``rN.bench``), each
the same image with an environment of its own (so each has its own snapshot, as
different images would); then one request to each route, in turn, timed from outside,
and how its instance was had, as the access log says (cold, wake).
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from krait.bench.http import status_of
from krait.bench.result import machine_info, summarize
from krait.errors import VmError
from krait.fleet.serving import serving
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.ports import free_port

_LINE = re.compile(r'"GET / HTTP/1\.1" (\d+) .* (\S+) (cold|wake|resume|warm)$', re.M)


def ask(port: int, host: str, timeout: float = 120.0) -> tuple[int, float]:
    import socket

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return status_of(data), time.monotonic() - started


def bench_routes(image: Path, count: int = 20, backend: str | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    _, spec = prepare(image, RunOptions(backend=backend))
    accel = "none (host process)" if backend == "process" else spec.accel.name
    with tempfile.TemporaryDirectory(prefix="krait-bench-routes-") as tmp:
        routes = Path(tmp) / "routes.toml"
        routes.write_text("".join(
            f'[[route]]\nname = "r{i}"\nhost = "r{i}.bench"\nimage = "{image.resolve()}"\n'
            f'env = ["KRAIT_BENCH_ROUTE=r{i}"]\nidle = "10m"\npause = "off"\n\n'
            for i in range(count)))
        port = free_port()
        log = Path(tmp) / "serve.log"
        extra = ("--backend", backend) if backend else ()
        started = time.monotonic()
        with serving(None, port, log, "--routes", str(routes), *extra,
                     name=f"bench-routes-{port}", start_timeout=60 + 30 * count) as serve:
            prewarm = time.monotonic() - started
            progress(f"{count} routes prewarmed and listening in {prewarm:.1f}s")
            first: list[float] = []
            for i in range(count):
                status, seconds = ask(port, f"r{i}.bench")
                if status != 200:
                    raise VmError(f"route r{i} answered {status}:\n{serve.text()[-2000:]}")
                first.append(round(seconds, 4))
                progress(f"r{i}: first request {seconds:.3f}s")
            status, _ = ask(port, "nowhere.bench")
            time.sleep(0.5)  # the access lines are written
            text = serve.text()
        hows = [m.group(3) for m in _LINE.finditer(text)]
    return {
        "benchmark": "routes", "accelerator": accel,
        "params": {"image": str(image), "routes": count, "backend": backend or "default",
                   "memory_mib": spec.memory},
        "start_with_prewarm_s": round(prewarm, 2),
        "first_request_s": {**summarize(first), "samples": first},
        "first_requests_by_start": {h: hows.count(h) for h in sorted(set(hows))},
        "all_first_requests_woke": hows.count("wake") == count,
        "unknown_host_status": status,
        "median_first_request_s": statistics.median(first),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
