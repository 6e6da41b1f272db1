"""A benchmark's result: samples, their summary, and what they were measured on."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from krait import __version__


def summarize(samples: list[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


@dataclass
class Result:
    benchmark: str
    unit: str
    samples: list[float]
    accelerator: str
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(runs=len(self.samples), **summarize(self.samples) if self.samples else {})
        data["machine"] = machine_info()
        data["krait"] = __version__
        data["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return data
