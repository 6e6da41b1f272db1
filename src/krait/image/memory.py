"""How much guest memory an image needs, from the heap and mappings measured at build.

The image's files live on read-only disks, not in guest RAM: the guest's page cache
holds what the app touches and gives it back under pressure. What must fit is the
kernel's own share, PID 1's (krait's runtime, which forks the app and stays), the app's
heap (anonymous memory once the app is imported at build time, with a margin for what
serving allocates), the shared libraries and interpreter pages it keeps mapped, and, for
an app that imports multiprocessing, two more interpreters. Below that the guest thrashes
its page cache or its OOM killer ends the app; the default adds room so that files stay
cached. Below the minimum `krait run` refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Calibrated with `krait bench memory` on hello, flask, fastapi and a numpy app (TCG,
# 2026-12-01; see the README): the smallest memory each served at was within 4 MiB of
# KERNEL_MIB + heap + half the mapped code, and ran at full speed a quarter above it.
# The kernel's own share of a small guest (its code and data, struct page for every
# frame, the first MiB, slab, the reserves the page allocator keeps free).
KERNEL_MIB = 8.0
# PID 1 forks the app and waits (krait.guest.reaper): the pages of its interpreter that
# the app's process writes to are copied, so both hold them (CPython 3.11 writes a
# reference count on every object it touches). Measured on hello at its ready line:
# 20.3 MiB in use before, 22.6 after; at 28 MiB it then thrashed (11.9 s to answer).
PID1_MIB = 3.0
HEAP_MARGIN = 1.0  # the build host's heap is already larger than the guest's
MAPPED_SHARE = 0.5  # of the mapped code, what must stay in the guest's page cache
# An app that imports multiprocessing at build time gets room for two more interpreters
# (a pool's workers, spawn's resource tracker): each is ~7 MiB of heap and page tables.
CHILD_MIB = 8.0
CHILDREN = 2
# The default: the minimum and a quarter more, for the page cache.
DEFAULT_HEADROOM = 1.25
# Measurements vary by a few pages from one build to the next; recorded in steps of this
# much, two builds of the same app give the same manifest (and digest).
STEP_MIB = 4


@dataclass(frozen=True)
class MemoryNeeds:
    heap_mib: int  # anonymous memory once the app was imported, in STEP_MIB steps
    mapped_mib: int  # interpreter and libraries mapped (file-backed, resident), in steps
    files_mib: float = 0.0  # what the disks hold (not in RAM: for the record)
    children_mib: float = 0.0  # other interpreters the app starts

    @property
    def minimum_mib(self) -> int:
        need = (KERNEL_MIB + PID1_MIB + self.heap_mib * HEAP_MARGIN + self.mapped_mib * MAPPED_SHARE
                + self.children_mib)
        return _round_up(need, 4)

    @property
    def default_mib(self) -> int:
        return _round_up(self.minimum_mib * DEFAULT_HEADROOM, 8)

    def explain(self) -> str:
        children = (f", {self.children_mib:.0f} MiB for child processes"
                    if self.children_mib else "")
        return (f"a {self.heap_mib} MiB heap, {self.mapped_mib} MiB of mapped code{children}, "
                f"the kernel's {KERNEL_MIB:.0f} MiB and krait's PID 1's {PID1_MIB:.0f} MiB")

    def to_json(self) -> dict[str, Any]:
        return {"minimum_mib": self.minimum_mib, "default_mib": self.default_mib,
                "heap_mib": self.heap_mib, "mapped_mib": self.mapped_mib,
                "files_mib": round(self.files_mib, 2), "children_mib": self.children_mib}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemoryNeeds:
        return cls(int(data["heap_mib"]), int(data["mapped_mib"]), float(data["files_mib"]),
                   float(data["children_mib"]))


def _measured_mib(kib: int) -> int:
    """A resident size the tracer measured, to the nearest MiB. It varies by some tens
    of KiB between runs (the environment, path lengths, allocator state); rounding a raw
    value up to a step gave an app just over a step's edge (hello: 12.01 MiB) two
    different images from two builds. To the nearest MiB first, it flips only near the
    middle of a MiB."""
    return round(kib / 1024)


def _round_up(mib: float, step: int) -> int:
    return int(math.ceil(mib / step) * step)


def memory_needed(heap_kib: int, mapped_kib: int, files_bytes: int,
                  starts_processes: bool = False) -> MemoryNeeds:
    """From what the tracer measured, what the disks hold, and whether the app starts
    other interpreters."""
    return MemoryNeeds(_round_up(_measured_mib(heap_kib), STEP_MIB),
                       _round_up(_measured_mib(mapped_kib), STEP_MIB),
                       files_bytes / 2**20, CHILD_MIB * CHILDREN if starts_processes else 0.0)
