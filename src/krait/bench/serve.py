"""``krait bench serve``: what `krait serve` costs and gives, measured through its proxy.

- first-request latency from nothing running: cold boot, snapshot wake; and warm;
- a bounded ``wrk`` load on loopback through the proxy, with its error count;
- how many idle instances this machine holds, and what each costs in host memory and CPU;
- with ``--profile``, only the load, and where the app's process spends its CPU under it
  (krait.guest.profile, in the guest).
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

from krait.bench.http import run_wrk, status_of
from krait.bench.result import machine_info, summarize
from krait.errors import VmError
from krait.fleet.driver import BootFailed, Handle, ImageRef, VmDriver
from krait.fleet.gateway import Gateway, Stats
from krait.fleet.observe import clean_orphans
from krait.fleet.policy import ScalePolicy
from krait.guest.profile import parse_lines
from krait.vmm.booted import booted
from krait.vmm.launch import RunOptions, prepare

Progress = Callable[[str], None]


async def http_get(port: int, path: str = "/", timeout: float = 120.0) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The Host a client on this machine sends (a framework may check it: Django does).
    writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return status_of(data), data


async def _first_request(image: ImageRef, options: RunOptions, how: str,
                         warm_requests: int = 0) -> tuple[float, Stats, list[float]]:
    """Seconds from connecting to the proxy to the whole response, for a request that finds
    no instance (``how`` = "cold": booted; "snapshot": woken from the snapshot, which must
    exist) or a paused one ("paused": resumed)."""
    driver = VmDriver(options, use_snapshots=how != "cold")
    policy = ScalePolicy(idle_seconds=3600, pause_seconds=0.2 if how == "paused" else None)
    async with Gateway(driver, image, policy, "bench", port=0) as gateway:
        if how == "paused":
            await http_get(gateway.port)
            deadline = time.monotonic() + 30
            while gateway.stats.pauses == 0:
                if time.monotonic() > deadline:
                    raise VmError("the instance was not paused")
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
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
        return first, gateway.stats, warm


async def _load(image: ImageRef, options: RunOptions, seconds: int, connections: int,
                max_instances: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    driver = VmDriver(options, use_snapshots=True)
    policy = ScalePolicy(idle_seconds=3600, max_instances=max_instances,
                         per_instance=max(1, connections // max_instances))
    async with Gateway(driver, image, policy, "bench-load", port=0) as gateway:
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


def _pss_mb(pid: int) -> float:
    """Proportional set size: a page shared by n processes counts 1/n in each."""
    return float(psutil.Process(pid).memory_full_info().pss) / 1e6


async def _idle(image: ImageRef, options: RunOptions, most: int, reserve_mb: float,
                progress: Progress) -> dict[str, Any]:
    """Wake idle instances from the snapshot one after another (up to ``most``, keeping
    ``reserve_mb`` of host memory free), check each answers, pause them all (the idle
    tier), and measure what they cost at rest; then check every one answers again."""
    driver = VmDriver(options, use_snapshots=True)
    handles: list[Handle] = []
    available_before = psutil.virtual_memory().available / 1e6
    began = time.monotonic()
    try:
        while len(handles) < most:
            available = psutil.virtual_memory().available / 1e6
            per = (available_before - available) / len(handles) if handles else 200.0
            if available - per < reserve_mb:
                break
            handle = await driver.boot(image, f"bench-idle-{len(handles) + 1}")
            status, _ = await http_get(handle.address[1], timeout=30)
            if status != 200:
                raise VmError(f"an idle instance answered {status}")
            await driver.pause(handle)
            handles.append(handle)
            if len(handles) % 20 == 0:
                progress(f"{len(handles)} idle instances held")
        await asyncio.sleep(3)  # let the host settle
        procs = [psutil.Process(driver.vm(h).pid) for h in handles]
        for p in procs:
            p.cpu_percent(None)
        window = 10.0
        await asyncio.sleep(window)
        cpu = [p.cpu_percent(None) for p in procs]
        pss = [round(_pss_mb(p.pid), 1) for p in procs]
        rss = [round(p.memory_info().rss / 1e6, 1) for p in procs]
        available_held = psutil.virtual_memory().available / 1e6
        per_instance = (available_before - available_held) / max(1, len(handles))
        answered, resumed = 0, []
        for h in handles:
            started = time.monotonic()
            await driver.resume(h)
            status, _ = await http_get(h.address[1], timeout=30)
            resumed.append(round(time.monotonic() - started, 4))
            answered += status == 200
            # Idle again: a running guest's timer ticks cost the host CPU under emulation,
            # and hundreds left running starve the ones still to be asked.
            await driver.pause(h)
        progress(f"held {len(handles)} paused instances: PSS median "
                 f"{statistics.median(pss):.1f} MB each, CPU {sum(cpu):.1f} % of a core in "
                 f"all; {answered} answered after a resume")
        return {
            "held": len(handles), "tier": "paused (woken from the snapshot, then stopped)",
            "answered_after_resume": answered, "limit": most,
            "pss_mb": summarize(pss), "rss_mb": summarize(rss),
            "host_memory_used_per_instance_mb": round(per_instance, 1),
            "idle_cpu_percent_total": round(sum(cpu), 2),
            "idle_cpu_window_s": window,
            "resume_to_answer_s": summarize(resumed),
            "seconds_for_all_of_it": round(time.monotonic() - began, 1),
            "host_memory_available_before_mb": round(available_before),
            "host_memory_available_while_held_mb": round(available_held),
            "estimated_capacity_by_memory": int(available_before / max(1.0, per_instance)),
        }
    finally:
        await driver.close()  # ends every VM and removes its folder


def bench_serve(image_path: Path, runs: int = 5, memory: int | None = None,
                wrk_seconds: int = 10, wrk_connections: int = 16, max_instances: int = 1,
                idle_max: int = 20, reserve_mb: float = 2048,
                progress: Progress = lambda _: None) -> dict[str, Any]:
    options = RunOptions(memory=memory)
    image = ImageRef.open(image_path, 1)
    _, spec = prepare(image_path, options, image=image.opened)
    snap = VmDriver(options).snapshot_for(image, spec)

    async def main() -> dict[str, Any]:
        cold, wake, resume = [], [], []
        warm: list[float] = []
        for i in range(runs):
            seconds, _, warm_samples = await _first_request(image, options, "cold", 10)
            cold.append(round(seconds, 4))
            warm += warm_samples
            progress(f"cold {i + 1}/{runs}: {seconds:.2f}s")
        snap.remove()
        seconds, stats, _ = await _first_request(image, options, "snapshot")
        progress(f"first boot, saving the snapshot: {seconds:.2f}s")
        ram_bytes, state_bytes = snap.size() if snap.exists() else (None, None)
        for i in range(runs):
            seconds, stats, _ = await _first_request(image, options, "snapshot")
            if stats.wakes != 1 or stats.boots != 1:
                raise VmError("the instance did not wake from its snapshot")
            wake.append(round(seconds, 4))
            progress(f"wake {i + 1}/{runs}: {seconds:.3f}s")
        for i in range(runs):
            seconds, stats, _ = await _first_request(image, options, "paused")
            if stats.resumes != 1:
                raise VmError("the instance was not resumed from pause")
            resume.append(round(seconds, 4))
            progress(f"resume {i + 1}/{runs}: {seconds * 1000:.1f} ms")
        progress(f"wrk through the proxy for {wrk_seconds}s ...")
        load = await _load(image, options, wrk_seconds, wrk_connections, max_instances)
        progress(f"wrk: {load.get('requests_per_s')} requests/s, {load.get('errors')} errors")
        idle = await _idle(image, options, idle_max, reserve_mb, progress)
        return {
            "first_request_s": {"cold": {**summarize(cold), "samples": cold},
                                "snapshot_wake": {**summarize(wake), "samples": wake},
                                "resume_from_pause": {**summarize(resume), "samples": resume},
                                "warm": {**summarize(warm), "samples": warm}},
            "wake_over_cold": round(statistics.median(wake) / statistics.median(cold), 3),
            "snapshot": {"state_bytes": state_bytes, "ram_file_bytes_on_disk": ram_bytes,
                         "ram_file_where": str(snap.ram.parent)},
            "load": load,
            "idle_instances": idle,
        }

    clean_orphans()  # what an earlier run that was killed left (its instances' folders)
    try:
        results = asyncio.run(main())
    except BootFailed as e:
        raise VmError(f"an instance did not boot: {e.reason}") from None
    return {
        "benchmark": "serve", "accelerator": spec.accel.name, "accel_reason": spec.accel.reason,
        "params": {"image": str(image_path), "memory_mib": spec.memory, "runs": runs,
                   "wrk_seconds": wrk_seconds, "wrk_connections": wrk_connections,
                   "max_instances": max_instances, "idle_max": idle_max},
        **results,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _proxy_load(image: ImageRef, options: RunOptions, seconds: int, connections: int
                ) -> dict[str, Any]:
    """_load on one instance, a boot that fails said as an error."""
    try:
        return asyncio.run(_load(image, options, seconds, connections, 1))
    except BootFailed as e:
        raise VmError(f"the instance did not boot: {e.reason}") from None


def requests_per_second(image_path: Path, memory: int | None = None, wrk_seconds: int = 10,
                        wrk_connections: int = 16) -> float:
    """The wrk load through the proxy on one instance (see krait bench ab --serve)."""
    load = _proxy_load(ImageRef.open(image_path, 1), RunOptions(memory=memory), wrk_seconds,
                       wrk_connections)
    if "skipped" in load:
        raise VmError(load["skipped"])
    if load["errors"]:
        raise VmError(f"{load['errors']} requests failed or were not answered 2xx under "
                      "the load", hint=f"try it by hand: {load['command']}")
    return float(load["requests_per_s"])


def bench_profile(image_path: Path, memory: int | None = None, wrk_seconds: int = 10,
                  wrk_connections: int = 16, progress: Progress = lambda _: None
                  ) -> dict[str, Any]:
    """The wrk load through the proxy, then the same load on the app's port of an
    instance that profiles where its CPU goes (the proxy is the host's: not in it)."""
    options = RunOptions(memory=memory)
    image = ImageRef.open(image_path, 1)
    _, spec = prepare(image_path, options, image=image.opened)
    clean_orphans()
    progress(f"wrk through the proxy for {wrk_seconds}s ...")
    load = _proxy_load(image, options, wrk_seconds, wrk_connections)
    progress(f"wrk: {load.get('requests_per_s')} requests/s, {load.get('errors')} errors; "
             f"again on a profiled instance's own port ...")
    with booted(image.opened, memory=memory, profile=True) as vm:
        for _ in range(2):  # the app's first requests: not what is measured
            status = asyncio.run(http_get(vm.port))[0]
            if status != 200:
                raise VmError(f"the app answered {status}, not 200")
        profiled = run_wrk(vm.url(), wrk_seconds, wrk_connections, 2, "10s")
    report = parse_lines(vm.lines)
    if report is None:
        raise VmError("the profiled instance ended without its report",
                      hint="its console, last lines: " + " | ".join(vm.lines[-5:]))
    profiled.pop("output")
    return {
        "benchmark": "serve-profile", "accelerator": spec.accel.name,
        "accel_reason": spec.accel.reason,
        "params": {"image": str(image_path), "memory_mib": spec.memory,
                   "wrk_seconds": wrk_seconds, "wrk_connections": wrk_connections},
        "load": load,
        "profiled_load": {k: profiled.get(k) for k in ("requests", "requests_per_s", "errors",
                                                        "command")},
        "profile": report,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
