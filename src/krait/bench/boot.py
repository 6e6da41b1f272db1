"""Boot to first HTTP response, measured from outside as a user would see it."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from pathlib import Path

import psutil

from krait.bench.result import Result
from krait.errors import VmError
from krait.image.archive import open_image
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend, free_port


def attempt_timeout(attempt: int) -> float:
    """How long one polling attempt may take: short at first, longer later.

    A request sent before the guest's network is up is held by QEMU's user-mode
    network, which retries its connection to the guest after 1 s, 2 s, ...; short
    attempts step around that, longer ones still let a slow first answer arrive.
    """
    return min(0.25 * 2 ** (attempt // 8), 5.0)


def first_response(url: str, deadline: float) -> tuple[int, bytes]:
    """Poll ``url`` until it answers (any HTTP status) or the deadline passes."""
    parts = urllib.parse.urlsplit(url)
    attempt = 0
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                          timeout=attempt_timeout(attempt))
        attempt += 1
        try:
            conn.request("GET", parts.path or "/")
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            time.sleep(0.005)
        finally:
            conn.close()
    raise VmError(f"{url} did not answer in time")


def boot_once(image: Path, memory: int | None, path: str = "/",
              timeout: float = 60) -> tuple[float, int, float]:
    """Seconds from starting QEMU to the first answer, its status, and QEMU's RSS in MB.

    The client asks as soon as the guest signals readiness on the control port (as a
    load balancer would). A request sent before the app listens is held by QEMU's
    user-mode network, which retries its connection to the guest with a backoff of
    1 s, 2 s, ...: that would measure slirp, not the boot.
    """
    port = free_port()
    img = open_image(image)
    guest_port = (img.manifest["settings"]["ports"] or [8080])[0]
    _, spec = prepare(image, RunOptions(ports=(PortForward(port, guest_port),), memory=memory),
                      image=img)
    backend = QemuBackend()
    started = time.monotonic()
    vm = backend.start(spec)
    try:
        if not vm.wait_ready(timeout):
            vm.kill()
            ended = vm.wait(10)
            raise VmError(f"{image.name} did not become ready: "
                          + (ended.reason if ended else "timed out"))
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
