"""What every variant of ``krait bench compare`` shares: its result, skipping, measuring."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from krait.bench.http import run_wrk
from krait.errors import KraitError

# The path the comparison's stats wrapper answers on (see payload.py).
STATS_PATH = "/_krait/stats"


class VariantSkipped(KraitError):
    """A variant cannot run here (a missing tool, no cache and no network): say why."""


@dataclass
class VariantResult:
    """One way of running the app, and what was measured of it."""

    name: str  # process | container | gp-vm | unikernel
    label: str
    skipped: str | None = None  # the reason, when the variant did not run
    error: str | None = None  # what went wrong, when it ran but could not be measured
    artifact_bytes: int | None = None
    boot_s: list[float] = field(default_factory=list)
    host_pss_mb: list[float] = field(default_factory=list)
    guest_used_mb: list[float] = field(default_factory=list)
    requests_per_s: float | None = None
    surface: dict[str, int | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    """How every variant is run: the same runs, memory, load and accelerator."""

    runs: int = 3
    memory_mib: int = 256
    accel: str | None = None  # kvm | tcg; None: detect (krait.vmm.accel)
    wrk_seconds: int = 5
    wrk_connections: int = 4
    boot_timeout: float = 300.0


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise VariantSkipped(f"`{name}` is not installed",
                             hint=f"apt-get install {package}")
    return path


def run_wrk_rps(url: str, settings: Settings) -> float:
    """Requests per second under a bounded load: a few connections, one thread."""
    if not shutil.which("wrk"):
        raise VariantSkipped("`wrk` is not installed", hint="apt-get install wrk")
    load = run_wrk(url, settings.wrk_seconds, settings.wrk_connections, threads=1)
    if not load["requests_per_s"]:
        raise KraitError("wrk measured no requests", hint=load["output"][-300:])
    return float(load["requests_per_s"])


def guest_used_mb(stats: dict[str, Any]) -> float | None:
    """Memory in use as the system the app runs in reports it (MemTotal - MemAvailable)."""
    mem = stats.get("meminfo") or {}
    if "MemTotal" in mem and "MemAvailable" in mem:
        used_kib: int = mem["MemTotal"] - mem["MemAvailable"]
        return round(used_kib / 1024, 1)
    return None


def wait_until(deadline: float, check: Any, interval: float = 0.05) -> Any:
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return None


def tree_mb(pid: int, kind: str = "rss") -> float:
    """The memory of a process and all its descendants, in MB: their RSS, or their PSS
    (proportional set size: pages shared between them, as gunicorn's forked workers share
    theirs, or with other processes, are counted once in all, not once per process)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += (p.memory_full_info().pss if kind == "pss" else p.memory_info().rss)
    return total / 1e6
