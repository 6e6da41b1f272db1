"""`krait bench serve --profile`: where a served app's CPU goes, sampled in the guest."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from krait.guest.profile import parse_lines
from krait.vmm.process import ProcessBackend

from .conftest import Boot, krait_cli

pytestmark = pytest.mark.vm

# A WSGI app on krait's builtin server whose one view burns CPU in a function of its own.
BUSY_APP = """
    def busy():
        return sum(i * i for i in range(20000))

    def app(environ, start_response):
        body = str(busy()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
"""


def test_bench_serve_profile_charges_the_apps_cpu_to_its_function(
        make_app: Callable[..., Path], build: Callable[[Path], Path], tmp_path: Path) -> None:
    image = build(make_app(BUSY_APP, kind="wsgi", entry="app:app", name="busy",
                           extra="ports = [8080]\n"))
    out = tmp_path / "profile.json"
    proc = krait_cli("bench", "serve", image, "--profile", "--wrk-seconds", "3",
                     "--wrk-connections", "2", "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["load"]["requests_per_s"] > 0 and doc["load"]["errors"] == 0
    assert doc["profiled_load"]["requests_per_s"] > 0
    report = doc["profile"]
    name, cpu, calls = named(report["total_s"], "(busy)")
    assert name.startswith("app:app.py:") and calls >= doc["profiled_load"]["requests"]
    # Most of the process's CPU goes to the view, the rest mostly to krait's server.
    assert cpu > 0.3 * report["profiled_cpu_s"], report["total_s"][:10]
    assert report["by_place_s"].get("krait", 0) > 0, report["by_place_s"]
    assert "app:app.py:3(busy.<locals>.<genexpr>)" in proc.stderr  # the summary shows it


def named(ranked: list[list[Any]], suffix: str) -> tuple[str, float, int]:
    return next((n, cpu, calls) for n, cpu, calls in ranked if str(n).endswith(suffix))


def test_a_process_target_reports_its_profile_when_it_stops(
        make_app: Callable[..., Path], build: Callable[[Path], Path], booted: Boot) -> None:
    image = build(make_app(BUSY_APP, kind="wsgi", entry="app:app", name="busyp",
                           extra="ports = [8080]\n"))
    with booted(image, backend=ProcessBackend(), profile=True) as vm:
        for _ in range(20):
            with urllib.request.urlopen(vm.url(), timeout=30) as response:
                assert response.status == 200
    report = parse_lines(vm.lines)
    assert report is not None, vm.lines[-5:]
    assert named(report["total_s"], "(busy)")[0].startswith("app:app.py:")
