"""One app, measured as users see it: image size, boot to first *correct* response,
guest memory in use after boot, and requests per second under a bounded wrk load."""

from __future__ import annotations

import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from krait.bench.http import first_answer, get, run_wrk
from krait.bench.result import Result
from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel
from krait.vmm.booted import booted

_MEMORY = re.compile(r"krait: memory in use ([\d.]+) MiB")


@dataclass(frozen=True)
class Probe:
    """What to ask and what a correct answer contains."""

    path: str = "/"
    expect: bytes = b""
    guest_port: int | None = None  # default: the image's first port
    https: bool = False
    env: tuple[tuple[str, str], ...] = ()
    connect: tuple[str, ...] = ()  # --connect NAME=HOST:PORT: where its services are


def _memory_in_use(lines: list[str], timeout: float = 10) -> float | None:
    """The guest's "memory in use" line, printed just after it said ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            if m := _MEMORY.search(line):
                return float(m.group(1))
        threading.Event().wait(0.05)
    return None


def bench_app(image: Path, probe: Probe, runs: int = 10, memory: int | None = None,
              wrk_seconds: int = 5, connections: int = 8, timeout: float = 120) -> Result:
    """Boot ``image`` ``runs`` times; time each to its first correct answer; then load it."""
    samples: list[float] = []
    guest_mem: list[float] = []
    qemu_rss: list[float] = []
    accel, memory_mib, load = "", 0, {}
    scheme = "https" if probe.https else "http"
    for i in range(runs + 1):
        with booted(image, memory=memory, env=dict(probe.env), connect=probe.connect,
                    ready_timeout=timeout,
                    guest_ports=(probe.guest_port,) if probe.guest_port else None) as vm:
            accel, memory_mib = vm.spec.accel.name, vm.spec.memory
            url = vm.url(probe.path, probe.guest_port, scheme)
            first_answer(url, vm.started + timeout, probe.expect)
            elapsed = time.monotonic() - vm.started
            if i < runs:
                samples.append(round(elapsed, 4))
                if (mib := _memory_in_use(vm.lines)) is not None:
                    guest_mem.append(mib)
                qemu_rss.append(round(psutil.Process(vm.vm.pid).memory_info().rss / 2**20, 1))
            else:  # one more boot, for the load test
                time.sleep(1)  # let the app settle (lazy imports on first requests)
                get(url, timeout=30)
                load = run_wrk(url, wrk_seconds, connections)
    return Result(
        "app", "s", samples, accel,
        params={"image": str(image), "path": probe.path, "https": probe.https,
                "memory_mib": memory_mib, "wrk": {"seconds": wrk_seconds,
                                                  "connections": connections, "threads": 2}},
        extra={"image_bytes": image.stat().st_size,
               "guest_memory_in_use_mib": {"samples": guest_mem, **(
                   {"median": statistics.median(guest_mem)} if guest_mem else {})},
               "qemu_rss_mib": qemu_rss,
               "requests_per_second": load["requests_per_s"],
               "wrk_non_2xx": load["non_2xx"], "wrk_socket_errors": load["socket_errors"],
               "wrk_output": load["output"]})


def probe_app(folder: Path, source: str, krait_toml: str, kernel: Kernel) -> Path:
    """A benchmark's own small app, written to ``folder`` and built; its image's path."""
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(source)
    (folder / "krait.toml").write_text(krait_toml)
    return build_image(load_app(folder), kernel).path
