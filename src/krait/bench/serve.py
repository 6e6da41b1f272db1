"""``krait bench serve``: what `krait serve` costs and gives, measured through its proxy.

- first-request latency from nothing running: cold boot, snapshot wake; and warm;
- a bounded ``wrk`` load on loopback through the proxy, with its error count;
- how many idle instances this machine holds, and what each costs in host memory and CPU.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from krait.bench.http import run_wrk
from krait.bench.result import machine_info, summarize
from krait.errors import VmError
from krait.fleet import snapshot
from krait.fleet.driver import Handle, ImageRef, QemuDriver
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.vmm.launch import RunOptions, prepare

Progress = Callable[[str], None]


async def http_get(port: int, path: str = "/", timeout: float = 120.0) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    head = data.split(b"\r\n", 1)[0].split()
    status = int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
    return status, data


async def _first_request(image: ImageRef, options: RunOptions, snapshots: bool,
                         warm_requests: int = 0) -> tuple[float, bool, list[float]]:
    """Seconds from connecting to a proxy with no instance to the whole first response."""
    driver = QemuDriver(options, use_snapshots=snapshots)
    gateway = Gateway(driver, image, ScalePolicy(idle_seconds=3600), "bench", port=0)
    await gateway.start()
    try:
        started = time.monotonic()
        status, _ = await http_get(gateway.port)
        first = time.monotonic() - started
        if status != 200:
            raise VmError(f"the app answered {status} through the proxy, not 200")
        warm = []
        for _ in range(warm_requests):
            started = time.monotonic()
            status, _ = await http_get(gateway.port)
            warm.append(round(time.monotonic() - started, 4))
        return first, gateway.stats.wakes == 1, warm
    finally:
        await gateway.close()


async def _load(image: ImageRef, options: RunOptions, seconds: int, connections: int,
                max_instances: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    driver = QemuDriver(options, use_snapshots=True)
    policy = ScalePolicy(idle_seconds=3600, max_instances=max_instances,
                         per_instance=max(1, connections // max_instances))
    gateway = Gateway(driver, image, policy, "bench-load", port=0)
    await gateway.start()
    try:
        status, _ = await http_get(gateway.port)  # warm: the load measures serving
        if status != 200:
            raise VmError(f"the app answered {status} through the proxy")
        result = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{gateway.port}/", seconds,
                                         connections, 2, "10s")
        result.pop("output")
        result.update(command=result["command"].rsplit(" ", 1)[0] + " http://127.0.0.1:PROXY/",
                      seconds=seconds, connections=connections, max_instances=max_instances,
                      instances_booted=gateway.stats.boots,
                      proxy_upstream_errors=gateway.stats.upstream_errors)
        return result
    finally:
        await gateway.close()


def _memory_of(pid: int) -> tuple[float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 1e6, info.uss / 1e6


async def _idle(image: ImageRef, options: RunOptions, most: int, reserve_mb: float,
                progress: Progress) -> dict[str, Any]:
    """Wake idle instances one after another (up to ``most``, keeping ``reserve_mb`` of
    host memory free), check each answers, and measure what they cost at rest."""
    driver = QemuDriver(options, use_snapshots=True)
    handles: list[Handle] = []
    available_before = psutil.virtual_memory().available / 1e6
    try:
        while len(handles) < most:
            available = psutil.virtual_memory().available / 1e6
            per = (available_before - available) / len(handles) if handles else 200.0
            if available - per < reserve_mb:
                break
            handles.append(await driver.boot(image, f"bench-idle-{len(handles) + 1}"))
        answered = 0
        for h in handles:
            status, _ = await http_get(h.address[1], timeout=30)
            answered += status == 200
        await asyncio.sleep(3)  # let them settle into idle
        procs = [psutil.Process(h.extra["vm"].pid) for h in handles]
        for p in procs:
            p.cpu_percent(None)
        await asyncio.sleep(5)
        cpu = [p.cpu_percent(None) for p in procs]
        memory = [_memory_of(p.pid) for p in procs]
        available_held = psutil.virtual_memory().available / 1e6
        rss = [round(r, 1) for r, _ in memory]
        uss = [round(u, 1) for _, u in memory]
        per_instance = (available_before - available_held) / max(1, len(handles))
        progress(f"held {len(handles)} idle instances: {statistics.median(rss):.0f} MB RSS, "
                 f"{statistics.median(uss):.0f} MB unique each")
        return {
            "held": len(handles), "answered": answered, "limit": most,
            "rss_mb": summarize(rss), "uss_mb": summarize(uss),
            "host_memory_used_per_instance_mb": round(per_instance, 1),
            "idle_cpu_percent_per_instance": summarize([round(c, 1) for c in cpu]),
            "idle_cpu_percent_total": round(sum(cpu), 1),
            "host_memory_available_before_mb": round(available_before),
            "host_memory_available_while_held_mb": round(available_held),
            "estimated_capacity_by_memory": int(available_before / max(1.0, per_instance)),
        }
    finally:
        for h in handles:
            h.extra["vm"].kill()
        await driver.close()
        for h in handles:
            h.extra["folder"].remove()


def bench_serve(image_path: Path, runs: int = 5, memory: int | None = None,
                wrk_seconds: int = 10, wrk_connections: int = 16, max_instances: int = 1,
                idle_max: int = 20, reserve_mb: float = 2048,
                progress: Progress = lambda _: None) -> dict[str, Any]:
    options = RunOptions(memory=memory)
    image = ImageRef.open(image_path, 1)
    _, spec = prepare(image_path, options, image=image.image)
    snap = snapshot.path_for(image.image, spec)

    async def main() -> dict[str, Any]:
        cold, wake = [], []
        warm: list[float] = []
        for i in range(runs):
            seconds, _, warm_samples = await _first_request(image, options, False, 10)
            cold.append(round(seconds, 4))
            warm += warm_samples
            progress(f"cold {i + 1}/{runs}: {seconds:.2f}s")
        snap.unlink(missing_ok=True)
        seconds, woke, _ = await _first_request(image, options, True)  # saves the snapshot
        progress(f"first boot with snapshot saving: {seconds:.2f}s")
        saved_bytes = snap.stat().st_size if snap.exists() else None
        for i in range(runs):
            seconds, woke, _ = await _first_request(image, options, True)
            if not woke:
                raise VmError("the instance did not wake from its snapshot")
            wake.append(round(seconds, 4))
            progress(f"wake {i + 1}/{runs}: {seconds:.3f}s")
        progress(f"wrk through the proxy for {wrk_seconds}s ...")
        load = await _load(image, options, wrk_seconds, wrk_connections, max_instances)
        progress(f"wrk: {load.get('requests_per_s')} requests/s, {load.get('errors')} errors")
        idle = await _idle(image, options, idle_max, reserve_mb, progress)
        return {
            "first_request_s": {"cold": {**summarize(cold), "samples": cold},
                                "snapshot_wake": {**summarize(wake), "samples": wake},
                                "warm": {**summarize(warm), "samples": warm}},
            "wake_over_cold": round(statistics.median(wake) / statistics.median(cold), 3),
            "snapshot_bytes": saved_bytes,
            "load": load,
            "idle_instances": idle,
        }

    results = asyncio.run(main())
    return {
        "benchmark": "serve", "accelerator": spec.accel.name, "accel_reason": spec.accel.reason,
        "params": {"image": str(image_path), "memory_mib": spec.memory, "runs": runs,
                   "wrk_seconds": wrk_seconds, "wrk_connections": wrk_connections,
                   "max_instances": max_instances, "idle_max": idle_max},
        **results,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
