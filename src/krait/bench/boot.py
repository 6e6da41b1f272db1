"""Boot to first HTTP response, measured from outside as a user would see it."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from krait.bench.result import Result
from krait.errors import VmError
from krait.image.archive import open_image
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_response(url: str, deadline: float) -> tuple[int, bytes]:
    """Poll ``url`` until it answers (any HTTP status) or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (OSError, urllib.error.URLError):
            time.sleep(0.005)
    raise VmError(f"{url} did not answer in time")


def boot_once(image: Path, memory: int | None, path: str = "/",
              timeout: float = 60) -> tuple[float, int, float]:
    """Seconds from starting QEMU to the first 200, the status, and QEMU's RSS in MB."""
    port = free_port()
    img = open_image(image)
    guest_port = (img.manifest["settings"]["ports"] or [8080])[0]
    _, spec = prepare(image, RunOptions(ports=(PortForward(port, guest_port),), memory=memory),
                      image=img)
    backend = QemuBackend()
    started = time.monotonic()
    vm = backend.start(spec)
    try:
        status, _ = first_response(f"http://127.0.0.1:{port}{path}", started + timeout)
        elapsed = time.monotonic() - started
        rss = psutil.Process(vm.pid).memory_info().rss / 1e6
    finally:
        vm.kill()
        vm.wait()
    return elapsed, status, rss


def bench_boot(image: Path, runs: int = 10, memory: int | None = None) -> Result:
    samples, rss = [], []
    accel = ""
    for _ in range(runs):
        elapsed, status, qemu_rss = boot_once(image, memory)
        if status != 200:
            raise VmError(f"the app answered {status}, not 200")
        samples.append(round(elapsed, 4))
        rss.append(round(qemu_rss, 1))
    _, spec = prepare(image, RunOptions(memory=memory))
    accel = spec.accel.name
    return Result("boot-to-first-200", "s", samples, accel,
                  params={"image": str(image), "memory_mib": spec.memory},
                  extra={"qemu_rss_mb": rss,
                         "image_bytes": image.stat().st_size})


def bench_memory(image: Path, candidates: tuple[int, ...] = (24, 28, 32, 36, 40, 44, 48, 64)
                 ) -> Result:
    """The smallest guest memory (MiB) at which the app still serves, and QEMU's RSS."""
    served: dict[int, bool] = {}
    rss: dict[int, float] = {}
    for mib in candidates:
        try:
            _, status, qemu_rss = boot_once(image, mib, timeout=30)
            served[mib] = status == 200
            rss[mib] = round(qemu_rss, 1)
        except VmError:
            served[mib] = False
    ok = [m for m, s in served.items() if s]
    _, spec = prepare(image, RunOptions())
    return Result("smallest-memory-that-serves", "MiB", [float(min(ok))] if ok else [],
                  spec.accel.name, params={"image": str(image), "tried": list(candidates)},
                  extra={"served": served, "qemu_rss_mb": rss})
