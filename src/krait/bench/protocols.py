"""``krait bench protocols``: what reading HTTP in the gateway costs, as requests/s
through `krait serve` with ``--protocol tcp`` (bytes both ways: A) against ``--protocol
http`` (each request read by h11, balanced per request, access-logged: B), and B without
its access log (C), in one run.

Each variant is its own `krait serve` child with one instance kept running; ``wrk``
runs against them in turn, rotated each round (ABC, BCA, CAB, ...), so drift in the
machine's load hits all alike; A against B and A against C go to a permutation test.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from krait.bench.ab import ALPHA, NOISE, permutation_p
from krait.bench.http import first_answer, run_wrk
from krait.bench.result import machine_info, summarize
from krait.errors import VmError
from krait.fleet.serving import ServeChild, serving
from krait.vmm.launch import RunOptions, prepare
from krait.vmm.ports import free_port

VARIANTS = {"tcp": ("--protocol", "tcp"), "http": ("--protocol", "http"),
            "http-no-access-log": ("--protocol", "http", "--no-access-log")}


def against(a: list[float], b: list[float]) -> dict[str, Any]:
    """B's throughput against A's: the ratio of medians, what B costs, and whether the
    difference is real (a permutation test and a noise threshold, as bench ab)."""
    ma, mb = statistics.median(a), statistics.median(b)
    p = permutation_p(a, b)
    real = p < ALPHA and abs(mb - ma) >= NOISE * ma
    return {"b_over_a": round(mb / ma, 3), "cost": round(1 - mb / ma, 3),
            "p_value": round(p, 4), "noise_threshold": NOISE, "alpha": ALPHA,
            "verdict": ("no real difference" if not real else
                        "B serves fewer requests/s" if mb < ma else "B serves more requests/s")}


def bench_protocols(image: Path, backend: str | None = None, rounds: int = 5,
                    wrk_seconds: int = 5, wrk_connections: int = 8, wrk_threads: int = 1,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise VmError("wrk is not installed", hint="apt-get install wrk (or make deps)")
    _, spec = prepare(image, RunOptions(backend=backend))
    accel = "none (host process)" if backend == "process" else spec.accel.name
    extra = ("--backend", backend) if backend else ()
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    errors: dict[str, int] = dict.fromkeys(VARIANTS, 0)
    latency: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="krait-bench-protocols-") as tmp, \
            contextlib.ExitStack() as stack:
        serves: dict[str, ServeChild] = {}
        for variant, args in VARIANTS.items():
            port = free_port()
            serves[variant] = stack.enter_context(serving(
                image, port, Path(tmp) / f"{variant}.log", "--min", "1", "--idle", "10m",
                "--pause", "off", *extra, *args, name=f"bench-{variant}-{port}"))
            status, _ = first_answer(serves[variant].url("/"), time.monotonic() + 120)
            if status != 200:
                raise VmError(f"{variant}: the app answered {status}, not 200")
        names = list(VARIANTS)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for variant in order:
                result = run_wrk(serves[variant].url("/"), wrk_seconds, wrk_connections,
                                 wrk_threads, "10s")
                samples[variant].append(result["requests_per_s"])
                errors[variant] += result["errors"]
                latency[variant].append(result["latency_ms"].get("p50", 0.0))
            progress(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{v} {samples[v][-1]:.0f} req/s" for v in names))
    tcp = samples["tcp"]
    return {
        "benchmark": "protocols", "unit": "requests/s", "accelerator": accel,
        "params": {"image": str(image), "backend": backend or "default", "rounds": rounds,
                   "wrk_seconds": wrk_seconds, "wrk_connections": wrk_connections,
                   "wrk_threads": wrk_threads, "order": "rotated each round"},
        "variants": {v: {"args": list(VARIANTS[v]), "samples": samples[v],
                         **summarize(samples[v]), "errors": errors[v],
                         "latency_p50_ms": summarize(latency[v])} for v in VARIANTS},
        "http_against_tcp": against(tcp, samples["http"]),
        "http_no_access_log_against_tcp": against(tcp, samples["http-no-access-log"]),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
