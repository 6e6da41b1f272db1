"""The interface every variant implements, and the loop that measures one."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

from krait.bench.compare._common import (
    STATS_PATH,
    Settings,
    VariantResult,
    VariantSkipped,
    guest_used_mb,
    run_wrk_rps,
)
from krait.bench.http import first_answer
from krait.config import AppConfig
from krait.errors import KraitError
from krait.vmm.ports import free_port

log = logging.getLogger("krait")


class Running:
    """A started variant: what the host can measure of it while it serves."""

    def host_pss_mb(self) -> float:
        raise NotImplementedError

    def guest_used_mb(self, stats: dict[str, Any]) -> float | None:
        """Memory in use as seen from inside; by default the guest's own /proc/meminfo."""
        return guest_used_mb(stats)


class Variant:
    """One way of running the app. ``prepare`` builds (cached) what it needs, or raises
    :class:`VariantSkipped` with the reason; ``started`` owns one running instance."""

    name = ""
    label = ""

    def __init__(self, app: AppConfig, payload_app: AppConfig, settings: Settings) -> None:
        # ``app`` as its folder declares it; ``payload_app`` the same app in the payload
        # folder with the stats wrapper as entry (see payload.py).
        self.app, self.payload_app, self.settings = app, payload_app, settings
        self.payload: Path = payload_app.root
        self.details: dict[str, Any] = {}

    def prepare(self) -> None:
        raise NotImplementedError

    def artifact_bytes(self) -> int:
        raise NotImplementedError

    def surface(self) -> dict[str, int | None]:
        raise NotImplementedError

    def started(self, port: int) -> contextlib.AbstractContextManager[Running]:
        raise NotImplementedError


def fetch_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{STATS_PATH}", timeout=30) as r:
        data: dict[str, Any] = json.load(r)
        return data


def measure(variant: Variant, progress: Any = lambda _: None) -> VariantResult:
    """Boot the variant ``settings.runs`` times; load the last boot with wrk."""
    s = variant.settings
    result = VariantResult(variant.name, variant.label)
    try:
        progress(f"{variant.name}: preparing")
        variant.prepare()
        result.artifact_bytes = variant.artifact_bytes()
        result.surface = variant.surface()
        listening: set[str] = set()
        for i in range(s.runs):
            progress(f"{variant.name}: run {i + 1}/{s.runs}")
            port = free_port()
            started = time.monotonic()
            with variant.started(port) as running:
                status, body = first_answer(f"http://127.0.0.1:{port}/",
                                            started + s.boot_timeout)
                elapsed = time.monotonic() - started
                if status != 200:
                    raise KraitError(f"{variant.name}: the app answered {status}, not 200: "
                                     f"{body[:200]!r}")
                result.boot_s.append(round(elapsed, 4))
                stats = fetch_stats(port)
                result.host_pss_mb.append(round(running.host_pss_mb(), 1))
                used = running.guest_used_mb(stats)
                if used is not None:
                    result.guest_used_mb.append(used)
                listening = set(stats.get("listening", []))
                if i == s.runs - 1:
                    progress(f"{variant.name}: wrk for {s.wrk_seconds}s")
                    result.requests_per_s = round(run_wrk_rps(f"http://127.0.0.1:{port}/", s),
                                                  1)
        result.surface["listening_ports"] = len(listening)
        result.details = {**variant.details, "listening": sorted(listening)}
    except VariantSkipped as e:
        reason = e.message + (f" ({e.hint})" if e.hint else "")
        log.warning("skipping %s: %s", variant.name, reason)
        result.skipped = reason
    except (KraitError, OSError) as e:
        # One variant failing must not throw away the others' (long) measurements.
        message = e.message if isinstance(e, KraitError) else str(e)
        log.warning("%s failed: %s", variant.name, message)
        result.error = message
        result.details = {**variant.details, **result.details}
    if result.skipped or result.error:  # nothing half-measured is reported as a number
        result.boot_s, result.host_pss_mb, result.guest_used_mb = [], [], []
        result.requests_per_s = None
    return result

