"""Measurements users read: boot to first response, memory, size, rebuild time.

Each benchmark returns a :class:`Result` (JSON with runs, min/median/max, the
accelerator and the machine). Benchmarks are run by ``krait bench``, never by the
test suite.
"""

from krait.bench.result import Result, machine_info, summarize

__all__ = ["Result", "machine_info", "summarize"]
