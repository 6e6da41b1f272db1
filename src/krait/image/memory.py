"""How much guest memory an image needs, from what it holds and the heap measured at build.

The initramfs lives in guest RAM for good (ramfs pages are never reclaimed); while the
kernel unpacks it, the archive is held too, and it is freed before Python starts. So a
guest needs, besides the kernel's own share, its files plus the larger of the archive
and the app's heap. The heap is what the app's interpreter had in anonymous memory
once the app was imported at build time, with a margin for what serving allocates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The kernel's own share of a small guest (its code and data, page tables, struct page
# for every frame, slab, the reserves the page allocator keeps free). Calibrated with
# `krait bench memory` on hello and flask (see the README).
KERNEL_MIB = 12.0
HEAP_MARGIN = 1.5  # what serving requests allocates beyond the imported app
# An app that imports multiprocessing at build time gets room for two more interpreters
# (a pool's workers, spawn's resource tracker): each is ~7 MiB of heap and page tables.
CHILD_MIB = 8.0
CHILDREN = 2
DEFAULT_HEADROOM = 1.25  # the default memory: the minimum and a quarter more
# The measured heap varies by a few pages from one build to the next; recorded in steps of
# this much, two builds of the same app give the same manifest (and digest).
HEAP_STEP_MIB = 4


@dataclass(frozen=True)
class MemoryNeeds:
    files_mib: float  # what the initramfs unpacks to
    archive_mib: float  # the initramfs as the guest receives it (compressed)
    heap_mib: float
    children_mib: float = 0.0  # other interpreters the app starts

    @property
    def minimum_mib(self) -> int:
        heap = self.heap_mib * HEAP_MARGIN + self.children_mib
        return _round_up(KERNEL_MIB + self.files_mib + max(self.archive_mib, heap), 4)

    @property
    def default_mib(self) -> int:
        return _round_up(self.minimum_mib * DEFAULT_HEADROOM, 8)

    def explain(self) -> str:
        children = (f", {self.children_mib:.0f} MiB for child processes"
                    if self.children_mib else "")
        return (f"{self.files_mib:.1f} MiB of files held in guest RAM, a "
                f"{self.heap_mib:.1f} MiB heap{children}, the kernel's {KERNEL_MIB:.0f} MiB")

    def to_json(self) -> dict[str, Any]:
        return {"minimum_mib": self.minimum_mib, "default_mib": self.default_mib,
                "files_mib": round(self.files_mib, 2), "archive_mib": round(self.archive_mib, 2),
                "heap_mib": round(self.heap_mib, 2), "children_mib": self.children_mib}


def _round_up(mib: float, step: int) -> int:
    return int(math.ceil(mib / step) * step)


def memory_needed(layers: list[dict[str, Any]], heap_kib: int,
                  starts_processes: bool = False) -> MemoryNeeds:
    """From the manifest's layer entries (their unpacked and stored sizes), the heap, and
    whether the app starts other interpreters."""
    files = sum(layer["cpio_size"] for layer in layers) / 2**20
    archive = sum(layer["size"] for layer in layers) / 2**20
    return MemoryNeeds(files, archive, _round_up(heap_kib / 1024, HEAP_STEP_MIB),
                       CHILD_MIB * CHILDREN if starts_processes else 0.0)
