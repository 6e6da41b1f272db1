"""Boot to first HTTP response, measured from outside as a user would see it; the
smallest memory that serves; and where a boot's time goes (its timeline)."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from krait.bench.http import first_answer
from krait.bench.result import Result
from krait.errors import VmError
from krait.image.archive import open_image
from krait.run import spawn
from krait.vmm.accel import detect_accel
from krait.vmm.base import Backend
from krait.vmm.booted import booted
from krait.vmm.ports import free_port
from krait.watchdog import start_time


def boot_once(image: Path, memory: int | None, path: str = "/", timeout: float = 60,
              check_memory: bool = True, backend: Backend | None = None) -> dict[str, object]:
    """One boot: seconds from starting QEMU to the first answer, its status, QEMU's RSS in
    MB (when QEMU is a process of this machine's), and the guest's timeline (seconds since
    QEMU started, per step). ``backend``: QEMU started by krait unless given.

    The client asks as soon as the guest signals readiness on the control port (as a
    load balancer would). A request sent before the app listens is held by QEMU's
    user-mode network, which retries its connection to the guest with a backoff of
    1 s, 2 s, ...: that would measure slirp, not the boot.
    """
    with booted(image, memory=memory, ready_timeout=timeout, check_memory=check_memory,
                backend=backend) as vm:
        status, _ = first_answer(vm.url(path), vm.started + timeout)
        answered = time.monotonic()
        rss = psutil.Process(vm.vm.pid).memory_info().rss / 1e6 if vm.vm.pid else None
        # The guest's clock starts with its kernel; the host saw "ready" at vm.ready.
        guest = dict(vm.vm.timeline)
        offset = (vm.ready - vm.started) - guest.get("ready", vm.ready - vm.started)
        timeline = {"qemu_to_kernel": round(max(0.0, offset), 4),
                    **{step: round(offset + t, 4) for step, t in guest.items()},
                    "first_answer": round(answered - vm.started, 4)}
    return {"seconds": answered - vm.started, "status": status, "qemu_rss_mb": rss,
            "timeline": timeline}


def bench_boot(image: Path, runs: int = 10, memory: int | None = None) -> Result:
    samples, rss, timelines = [], [], []
    for _ in range(runs):
        one = boot_once(image, memory)
        if one["status"] != 200:
            raise VmError(f"the app answered {one['status']}, not 200")
        samples.append(round(float(one["seconds"]), 4))  # type: ignore[arg-type]
        rss.append(round(float(one["qemu_rss_mb"]), 1))  # type: ignore[arg-type]
        timelines.append(one["timeline"])
    memory_mib = memory or open_image(image).manifest.boot.memory
    return Result("boot-to-first-200", "s", samples, detect_accel().name,
                  params={"image": str(image), "memory_mib": memory_mib},
                  extra={"qemu_rss_mb": rss, "image_bytes": image.stat().st_size,
                         "timelines": timelines})


def bench_memory(image: Path, candidates: tuple[int, ...] = (16, 20, 24, 28, 32, 40, 48, 64)
                 ) -> Result:
    """The smallest guest memory (MiB) at which the app still serves, and QEMU's RSS."""
    served: dict[int, bool] = {}
    seconds: dict[int, float] = {}
    rss: dict[int, float] = {}
    for mib in candidates:
        try:
            one = boot_once(image, mib, timeout=30, check_memory=False)
            served[mib] = one["status"] == 200
            seconds[mib] = round(float(one["seconds"]), 3)  # type: ignore[arg-type]
            rss[mib] = round(float(one["qemu_rss_mb"]), 1)  # type: ignore[arg-type]
        except VmError:
            served[mib] = False
    ok = [m for m, s in served.items() if s]
    needs = open_image(image).manifest.memory
    return Result("smallest-memory-that-serves", "MiB", [float(min(ok))] if ok else [],
                  detect_accel().name, params={"image": str(image), "tried": list(candidates)},
                  extra={"served": served, "boot_s": seconds, "qemu_rss_mb": rss,
                         "image_minimum_mib": needs.minimum_mib,
                         "image_default_mib": needs.default_mib})


def _krait_command() -> list[str]:
    """The `krait` a user runs: this environment's script, else the module."""
    script = Path(sys.executable).with_name("krait")
    return [str(script)] if script.exists() else [sys.executable, "-m", "krait.cli"]


def wall_once(image: Path, timeout: float = 60) -> dict[str, float | int]:
    """One `krait run IMAGE -p PORT:GUEST` as a user starts it, asked until it answers
    (a client that tries again at once when refused): seconds from starting krait to
    the first answer, and to QEMU's start (when its process started, to a clock tick: 10 ms)."""
    port = free_port()
    guest = (open_image(image).manifest.ports or [8080])[0]
    # Process start times count clock ticks since boot, suspended time included.
    launched, t0 = time.clock_gettime(time.CLOCK_BOOTTIME), time.monotonic()
    with spawn([*_krait_command(), "run", str(image), "-p", f"{port}:{guest}"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, grace=30) as proc:
        # Until the port takes a connection, only connects (refused in microseconds):
        # a client polling with whole requests would take CPU from the booting guest,
        # which boot_once's client, asking only once the guest is ready, does not.
        while time.monotonic() < t0 + timeout and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.005)
        status, _ = first_answer(f"http://127.0.0.1:{port}/", t0 + timeout)
        answered = time.monotonic()
        vmm = [int(ticks) / os.sysconf("SC_CLK_TCK")
               for p in psutil.Process(proc.pid).children()
               if p.name().startswith("qemu-system") and (ticks := start_time(p.pid))]
        proc.send_signal(signal.SIGINT)  # as a user stops it: krait stops the VM
        proc.wait(30)
    return {"seconds": answered - t0, "status": status,
            "to_vmm": round(vmm[0] - launched, 3) if vmm else -1.0}


def bench_wall(image: Path, runs: int = 10) -> Result:
    """What a user waits for (`krait run` started to first 200) against the guest's own
    boot to first 200 (QEMU started to first 200, krait's run-time already loaded), in
    interleaved pairs: their difference is krait's own start-up."""
    wall: list[float] = []
    boot: list[float] = []
    to_vmm: list[float] = []
    for i in range(runs):
        for which in ("wall", "boot") if i % 2 == 0 else ("boot", "wall"):
            if which == "wall":
                one: dict[str, object] = dict(wall_once(image))
                to_vmm.append(float(one["to_vmm"]))  # type: ignore[arg-type]
            else:
                one = boot_once(image, None)
            if one["status"] != 200:
                raise VmError(f"the app answered {one['status']}, not 200")
            seconds = round(float(one["seconds"]), 4)  # type: ignore[arg-type]
            (wall if which == "wall" else boot).append(seconds)
    overhead = round(statistics.median(wall) - statistics.median(boot), 4)
    return Result("run-to-first-200", "s", wall, detect_accel().name,
                  params={"image": str(image), "client": "retries at once when refused"},
                  extra={"guest_boot_to_first_200_s": boot,
                         "guest_boot_median_s": statistics.median(boot),
                         "krait_to_qemu_start_s": to_vmm,
                         "krait_overhead_median_s": overhead})
