"""`krait bench backends`: what the engine costs. Boot to first 200 with QEMU started by
krait and through libvirt on each host given (local, or over SSH), interleaved in one
run; then `krait serve` across those hosts under a bounded wrk load, with its errors."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from krait.bench.boot import boot_once
from krait.bench.http import run_wrk
from krait.bench.result import machine_info, summarize
from krait.bench.serve import http_get
from krait.errors import VmError
from krait.fleet.driver import ImageRef, VmDriver, hosts_for
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.vmm.accel import detect_accel
from krait.vmm.backends import get_backend
from krait.vmm.base import Backend
from krait.vmm.launch import RunOptions

Progress = Any


def label(uri: str) -> str:
    """A host's name in the results: "libvirt local", "libvirt qemu+ssh"."""
    backend = get_backend("libvirt", uri)
    return f"{backend.name} {'local' if backend.label == backend.name else urlsplit(uri).scheme}"


def bench_backends(image: Path, uris: tuple[str, ...], runs: int = 5, wrk_seconds: int = 10,
                   wrk_connections: int = 8, progress: Progress = lambda _: None
                   ) -> dict[str, Any]:
    engines: list[tuple[str, Backend]] = [("qemu", get_backend("qemu"))]
    engines += [(label(uri), get_backend("libvirt", uri)) for uri in uris]
    samples: dict[str, list[float]] = {name: [] for name, _ in engines}
    for i in range(runs):
        for name, backend in engines:  # interleaved: the machine's noise hits all alike
            one = boot_once(image, None, backend=backend)
            if one["status"] != 200:
                raise VmError(f"{name}: the app answered {one['status']}, not 200")
            samples[name].append(round(float(one["seconds"]), 4))  # type: ignore[arg-type]
            progress(f"{i + 1}/{runs} {name}: {one['seconds']:.3f}s")
    direct = statistics.median(samples["qemu"])
    boots = {name: {**summarize(s), "samples": s,
                    "over_qemu": round(statistics.median(s) / direct, 3)}
             for name, s in samples.items()}
    load = None
    if len(uris) >= 2:
        progress(f"krait serve across {len(uris)} hosts, wrk for {wrk_seconds}s ...")
        load = asyncio.run(_load(image, uris, wrk_seconds, wrk_connections))
        progress(f"wrk: {load['requests_per_s']} requests/s, {load['errors']} errors")
    accel = detect_accel()
    return {
        "benchmark": "backends", "unit": "s", "accelerator": accel.name,
        "accel_reason": accel.reason,
        "params": {"image": str(image), "runs": runs, "hosts": [label(u) for u in uris]},
        "boot_to_first_200_s": boots, "serve_across_hosts": load,
        "machine": machine_info(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


async def _load(image_path: Path, uris: tuple[str, ...], seconds: int, connections: int
                ) -> dict[str, Any]:
    image = ImageRef.open(image_path, 1)
    driver = VmDriver(RunOptions(), hosts=hosts_for("libvirt", uris))
    policy = ScalePolicy(idle_seconds=3600, max_instances=len(uris),
                         per_instance=max(1, connections // len(uris)), pause_seconds=None)
    async with Gateway(driver, image, policy, "bench-hosts", port=0) as gateway:
        # As many at once as it takes to bring up an instance on every host.
        answers = await asyncio.gather(*(http_get(gateway.port, timeout=60)
                                         for _ in range(connections)))
        if any(status != 200 for status, _ in answers):
            raise VmError(f"answers through the proxy: {sorted(s for s, _ in answers)}")
        result = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{gateway.port}/",
                                         seconds, connections, 2, "10s")
        result.pop("output")
        placed = [h.instances for h in driver.hosts]
        result.update(command=result["command"].rsplit(" ", 1)[0] + " http://127.0.0.1:PROXY/",
                      seconds=seconds, connections=connections,
                      instances_per_host=dict(zip([label(u) for u in uris], placed,
                                                  strict=True)),
                      proxy_upstream_errors=gateway.stats.upstream_errors)
        return result
