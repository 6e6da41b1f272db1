"""Where the app's process spends its CPU while it serves, on only when a boot asks for
it (``krait bench serve --profile``).

Every thread of the app's process started from here on gets a profiler of its own: the
standard library's deterministic one (``_lsprof``, what cProfile is made of), timed by
that thread's CPU clock, so a thread that waits (in select, on a lock, for the GIL) is
charged nothing for it. Each function is named by where its code lives: krait's runtime,
the app, its packages, the standard library, or C ("builtin"). When the app ends, the
report goes to the console as JSON (report_lines), which the benchmark reads.

Not a sampler: inside the process a sampler looks only when it holds the GIL, which a
worker thread hands over as it blocks, so it sees CPU at the wait after it rather than
where it was spent (tried: it charged 70 % of a busy view's CPU to asyncio's
``_write_to_self``). The price is the profiler's own cost in every call, which shrinks
the requests/s of a profiled instance; its shares are what it is for.
"""

from __future__ import annotations

import _lsprof
import _thread
import json
import os
import threading
import time

from krait.guest import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

REPORT = "krait: profile "
PIECE = 3000  # characters of the report's JSON in one console line
TOP = 100  # functions in each list of the report


class Profile:
    def __init__(self, places: dict[str, str]) -> None:
        """``places``: a folder -> the name its code is reported under."""
        self._places = sorted(places.items(), key=lambda kv: -len(kv[0]))
        self._profilers: list[Any] = []
        self._lock = _thread.allocate_lock()
        self._names: dict[object, str] = {}
        self._since = time.monotonic()
        self._times = os.times()

    def start(self) -> None:
        """Profile this thread and every thread started with ``threading`` after it."""
        threading.setprofile(self._first_event)
        self._enable()

    def _first_event(self, frame: object, event: str, arg: object) -> None:
        self._enable()  # replaces this hook for the thread

    def _enable(self) -> None:
        profiler = _lsprof.Profiler(time.thread_time)
        with self._lock:
            self._profilers.append(profiler)
        profiler.enable()

    def restart(self) -> None:
        """Forget what was counted so far (the app's start-up); count from now."""
        with self._lock:
            for profiler in self._profilers:
                profiler.clear()
            self._since, self._times = time.monotonic(), os.times()

    def stop(self) -> dict[str, Any]:
        """Stop profiling; the report."""
        threading.setprofile(None)
        seconds, now = time.monotonic() - self._since, os.times()
        inline: dict[str, float] = {}
        total: dict[str, float] = {}
        calls: dict[str, int] = {}
        with self._lock:
            for profiler in self._profilers:
                for entry in profiler.getstats():
                    name = self._name(entry.code)
                    inline[name] = inline.get(name, 0.0) + entry.inlinetime
                    total[name] = total.get(name, 0.0) + entry.totaltime
                    calls[name] = calls.get(name, 0) + entry.callcount
            threads = len(self._profilers)
        by_place: dict[str, float] = {}
        for name, cpu in inline.items():
            place = name.partition(":")[0]
            by_place[place] = by_place.get(place, 0.0) + cpu

        def top(counts: dict[str, float]) -> list[list[Any]]:
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP]
            return [[name, round(cpu, 4), calls[name]] for name, cpu in ranked]

        return {
            "seconds": round(seconds, 3),
            "threads": threads,
            # The whole process, as the kernel counts it (every thread, profiled or not).
            "process_cpu_s": {"user": round(now.user - self._times.user, 3),
                              "system": round(now.system - self._times.system, 3)},
            "profiled_cpu_s": round(sum(inline.values()), 4),
            "calls": sum(calls.values()),
            "by_place_s": {k: round(v, 4) for k, v in
                           sorted(by_place.items(), key=lambda kv: -kv[1])},
            # [function, CPU seconds, calls]: in the function itself; with what it called.
            "self_s": top(inline),
            "total_s": top(total),
        }

    def _name(self, code: object) -> str:
        name = self._names.get(code)
        if name is None:
            if isinstance(code, str):  # C: "<built-in method posix.stat>" and the like
                name = f"builtin:{code}"
            else:
                filename: str = code.co_filename  # type: ignore[attr-defined]
                place, path = "other", filename  # frozen modules: "<frozen NAME>"
                for folder, label in self._places:
                    if filename.startswith(folder + "/"):
                        place, path = label, filename[len(folder) + 1:]
                        break
                name = (f"{place}:{path}:{code.co_firstlineno}"  # type: ignore[attr-defined]
                        f"({code.co_qualname})")  # type: ignore[attr-defined]
            self._names[code] = name
        return name


def start(app_dir: str, packages_dir: str) -> Profile:
    """Profile the app whose folders these are (where they are now); its code was compiled
    where the guest has them, which is what a function's file says."""
    runtime = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    profile = Profile({
        app_dir: "app", protocol.APP_DIR: "app",
        packages_dir: "packages", protocol.PACKAGES_DIR: "packages",
        runtime: "krait", protocol.RUNTIME_DIR + "/krait": "krait",
        os.path.dirname(os.__file__): "stdlib"})
    profile.start()
    return profile


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as console lines: REPORT, "I/N " and a piece of its JSON (ASCII), each
    under the host's longest console line (krait.vmm.console.MAX_LINE)."""
    text = json.dumps(report, separators=(",", ":"))
    pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]
    return [f"{REPORT}{i}/{len(pieces)} {piece}" for i, piece in enumerate(pieces, 1)]


def parse_lines(lines: Iterable[str]) -> dict[str, Any] | None:
    """The last whole report among console lines, or None. On the host: these are lines
    the guest wrote, so anything; a report is its pieces 1..N in order, and a JSON
    object."""
    found = None
    pieces: list[str] = []
    for line in lines:
        if not line.startswith(REPORT):
            continue
        count, _, piece = line[len(REPORT):].partition(" ")
        i, _, n = count.partition("/")
        if not (i.isdecimal() and n.isdecimal() and int(i) == len(pieces) + 1 <= int(n)):
            pieces = []
            continue
        pieces.append(piece)
        if int(i) == int(n):
            try:
                report = json.loads("".join(pieces))
            except ValueError:
                report = None
            found = report if isinstance(report, dict) else found
            pieces = []
    return found
