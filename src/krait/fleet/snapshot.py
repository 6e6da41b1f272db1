"""Snapshot wake: save a freshly ready guest once, wake later instances from the file.

A snapshot holds the guest's memory, so it is only valid for the same image, kernel
command line (boot-time settings live in guest memory), memory size, vCPU count and
accelerator; its file name is a hash of exactly those. Host port forwards are not in
it: QEMU's user-mode network is set up by the waking QEMU's own command line.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from krait.image.archive import Image
from krait.paths import cache_dir
from krait.vmm.base import Vm, VmSpec


def snapshots_dir() -> Path:
    path = cache_dir() / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def key(image: Image, spec: VmSpec) -> str:
    identity = {"image": image.digest, "cmdline": list(spec.cmdline), "memory": spec.memory,
                "vcpus": spec.vcpus, "accel": spec.accel.name, "kernel": spec.kernel.name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def path_for(image: Image, spec: VmSpec) -> Path:
    return snapshots_dir() / f"{image.name}-{key(image, spec)}.state"


def save(vm: Vm, path: Path) -> float:
    """Snapshot a running VM (it runs on afterwards); return the seconds it was paused."""
    started = time.monotonic()
    vm.snapshot(path, resume=True)
    return time.monotonic() - started
