"""One app, measured as users see it: image size, boot to first *correct* response,
guest memory in use after boot, and requests per second under a bounded wrk load."""

from __future__ import annotations

import re
import shutil
import ssl
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from krait.bench.boot import attempt_timeout
from krait.bench.result import Result
from krait.errors import VmError
from krait.image.archive import open_image
from krait.run import run
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend, QemuVm, free_port

_MEMORY = re.compile(r"krait: memory in use ([\d.]+) MiB")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")


@dataclass(frozen=True)
class Probe:
    """What to ask and what a correct answer contains."""

    path: str = "/"
    expect: bytes = b""
    guest_port: int | None = None  # default: the image's first port
    https: bool = False
    env: tuple[tuple[str, str], ...] = ()


def _get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _first_correct(url: str, expect: bytes, deadline: float) -> None:
    last: Any = None
    attempt = 0
    while time.monotonic() < deadline:
        try:
            attempt += 1
            status, body = _get(url, timeout=attempt_timeout(attempt - 1))
            if status == 200 and expect in body:
                return
            last = (status, body[:200])
        except (OSError, urllib.error.URLError, ssl.SSLError) as e:
            last = e
        time.sleep(0.005)
    raise VmError(f"{url} gave no correct answer in time (last: {last!r})")


class _Booted:
    def __init__(self, image: Path, probe: Probe, memory: int | None) -> None:
        img = open_image(image)
        self.guest_port = probe.guest_port or (img.manifest["settings"]["ports"] or [8080])[0]
        self.port = free_port()
        self.lines: list[str] = []
        _, self.spec = prepare(image, RunOptions(ports=(PortForward(self.port, self.guest_port),),
                                                 memory=memory, env=dict(probe.env)), image=img)
        self.memory_seen = threading.Event()
        self.url = (f"{'https' if probe.https else 'http'}://127.0.0.1:{self.port}{probe.path}")

    def on_console(self, line: str) -> None:
        self.lines.append(line)
        if _MEMORY.search(line):
            self.memory_seen.set()

    def start(self) -> QemuVm:
        return QemuBackend().start(self.spec, on_console=self.on_console)

    def memory_mib(self) -> float | None:
        for line in self.lines:
            if m := _MEMORY.search(line):
                return float(m.group(1))
        return None


def _stop(vm: QemuVm) -> None:
    vm.kill()
    vm.wait()


def run_wrk(url: str, seconds: int, connections: int, threads: int = 2) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise VmError("wrk is not installed", hint="apt-get install wrk (or `make deps`)")
    proc = run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                "--timeout", "5s", url], timeout=seconds + 30)
    m = _RPS.search(proc.stdout)
    errors = re.search(r"Socket errors: (.*)", proc.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", proc.stdout)
    return {"requests_per_second": float(m.group(1)) if m else 0.0,
            "socket_errors": errors.group(1) if errors else "",
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "output": proc.stdout}


def bench_app(image: Path, probe: Probe, runs: int = 10, memory: int | None = None,
              wrk_seconds: int = 5, connections: int = 8, timeout: float = 120) -> Result:
    """Boot ``image`` ``runs`` times; time each to its first correct answer; then load it."""
    samples: list[float] = []
    guest_mem: list[float] = []
    qemu_rss: list[float] = []
    accel = ""
    for i in range(runs + 1):
        booted = _Booted(image, probe, memory)
        accel = booted.spec.accel.name
        started = time.monotonic()
        vm = booted.start()
        try:
            _first_correct(booted.url, probe.expect, started + timeout)
            elapsed = time.monotonic() - started
            booted.memory_seen.wait(10)
            if i < runs:
                samples.append(round(elapsed, 4))
                if (mib := booted.memory_mib()) is not None:
                    guest_mem.append(mib)
                qemu_rss.append(round(psutil.Process(vm.pid).memory_info().rss / 2**20, 1))
            else:  # one more boot, for the load test
                time.sleep(1)  # let the app settle (lazy imports on first requests)
                _get(booted.url, timeout=30)
                load = run_wrk(booted.url, wrk_seconds, connections)
        finally:
            _stop(vm)
    return Result(
        "app", "s", samples, accel,
        params={"image": str(image), "path": probe.path, "https": probe.https,
                "memory_mib": booted.spec.memory, "wrk": {"seconds": wrk_seconds,
                                                          "connections": connections,
                                                          "threads": 2}},
        extra={"image_bytes": image.stat().st_size,
               "guest_memory_in_use_mib": {"samples": guest_mem, **(
                   {"median": statistics.median(guest_mem)} if guest_mem else {})},
               "qemu_rss_mib": qemu_rss,
               "requests_per_second": load["requests_per_second"],
               "wrk_non_2xx": load["non_2xx"], "wrk_socket_errors": load["socket_errors"],
               "wrk_output": load["output"]})
