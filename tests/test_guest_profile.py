"""The guest's profiler (krait.guest.profile), run in this process: CPU is charged to the
function that used it, by where its code lives, in every thread started after it; waiting
is charged nothing; its report survives the console line it travels in."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from krait.guest import profile
from krait.vmm.console import MAX_LINE


def _spin(until: float) -> int:
    n = 0
    while time.monotonic() < until:
        n += 1
    return n


def _named(report: dict[str, Any], key: str, suffix: str) -> tuple[str, float, int]:
    return next((name, cpu, calls) for name, cpu, calls in report[key]
                if name.endswith(suffix))


def _profiled(work: Callable[[profile.Profile], object]) -> dict[str, Any]:
    """Run ``work`` with a profile on (threads it starts included); the report. The
    profile is stopped whatever happens: it must not outlive the test."""
    profiled = profile.Profile({str(Path(__file__).parent): "app"})
    profiled.start()
    try:
        work(profiled)
    finally:
        report = profiled.stop()
        sys.setprofile(None)  # this thread's profiler
    return report


def test_cpu_is_charged_to_the_busy_function_in_its_thread_and_waiting_to_nothing() -> None:
    def work(_: profile.Profile) -> None:
        stop = threading.Event()
        waiter = threading.Thread(target=stop.wait)  # waits the whole time: no CPU
        waiter.start()
        busy = threading.Thread(target=_spin, args=(time.monotonic() + 0.5,))
        busy.start()
        busy.join()
        stop.set()
        waiter.join()

    report = _profiled(work)
    name, cpu, calls = _named(report, "total_s", "(_spin)")
    assert name.startswith("app:test_guest_profile.py:") and calls == 1
    assert 0.3 < cpu < 0.6  # its thread's CPU, not the wall time of the whole test
    waited = [c for n, c, _ in report["total_s"] if "wait" in n.lower()]
    assert all(c < 0.05 for c in waited), report["total_s"]
    # Its own lines (the clock it reads is C: "builtin").
    assert report["by_place_s"]["app"] > 0.1 and report["threads"] >= 3


def test_a_restart_forgets_what_came_before() -> None:
    def work(profiled: profile.Profile) -> None:
        _spin(time.monotonic() + 0.2)
        profiled.restart()
        time.sleep(0.1)

    report = _profiled(work)
    assert not any(name.endswith("(_spin)") for name, _, _ in report["total_s"])
    assert report["seconds"] < 0.5


def test_the_report_travels_in_console_lines_and_anything_else_is_no_report() -> None:
    report = _profiled(lambda _: _spin(time.monotonic() + 0.05))
    assert os.path.basename(__file__) in str(report["self_s"])
    # As long as a busy app's: more than one console line holds.
    report["self_s"] += [[f"stdlib:module{i}.py:{i}(fünction)", 0.1, i] for i in range(80)]
    lines = profile.report_lines(report)
    assert len(lines) > 1
    assert all("\n" not in line and len(line) < MAX_LINE and line.isascii() for line in lines)
    assert profile.parse_lines(["krait: hello ready", *lines, "krait: stopped"]) == report
    # What the guest wrote is anything: only a whole report, in order, is one.
    assert profile.parse_lines(lines[:-1]) is None
    assert profile.parse_lines([lines[1], lines[0], *lines[2:]]) is None
    assert profile.parse_lines([profile.REPORT + "1/1 [1, 2]"]) is None
    assert profile.parse_lines([profile.REPORT + "1/1 {not json"]) is None
    assert profile.parse_lines([profile.REPORT + "2/1 {}", profile.REPORT + "x/y {}"]) is None
    assert profile.parse_lines([*lines, profile.REPORT + "1/1 {}"]) == {}  # the last one
