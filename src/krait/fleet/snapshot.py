"""Snapshot wake: boot a guest once with its RAM in a file, save its devices' state when
it is ready, and wake every later instance from the pair.

    NAME-KEY.ram     guest RAM, written by the template VM (share=on); each clone maps it
                     privately: one host copy of every page no clone has written to
    NAME-KEY.state   the devices' state (migration with x-ignore-shared: kilobytes)

A snapshot is valid only for what its memory and devices hold: the image, the kernel
command line (boot-time settings live in guest memory), memory size, vCPU count,
accelerator, the device model (QEMU's command line without per-instance paths and ports),
the QEMU and krait versions and the requests the template was warmed with (the image's
check requests: a clone wakes with their work done); its key is a hash of exactly those.
Host port forwards are not in it: the waking QEMU forwards its own (once it is ready).
Files are 0600, complete when their name appears, and pruned oldest first beyond a cap.
Both files' digests are recorded when the snapshot is complete (``NAME-KEY.digests``),
and every wake checks them first (krait.integrity): a changed file is never woken from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from krait import __version__
from krait.image.archive import Image
from krait.image.check_requests import warm_requests
from krait.integrity import remember_verified, sha256_file, verified
from krait.paths import cache_dir, krait_dir, write_atomically
from krait.run import run
from krait.vmm.base import VmSpec

log = logging.getLogger("krait.fleet")
# Snapshots kept in all, largest RAM files first to go beyond it (KRAIT_SNAPSHOT_MAX_MB).
DEFAULT_MAX_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Snapshot:
    ram: Path
    state: Path

    @property
    def name(self) -> str:
        return self.state.stem

    def exists(self) -> bool:
        return self.ram.is_file() and self.state.is_file()

    def size(self) -> tuple[int, int]:
        """(bytes of RAM file allocated on disk, bytes of device state)."""
        return self.ram.stat().st_blocks * 512, self.state.stat().st_size

    @property
    def digests(self) -> Path:
        return self.state.with_suffix(".digests")

    def remove(self) -> None:
        for path in (self.state, self.ram, self.state.with_suffix(".image"), self.digests,
                     *(p.with_name(p.name + ".verified") for p in (self.state, self.ram))):
            path.unlink(missing_ok=True)

    def intact(self) -> bool:
        """Are both files what they were when the snapshot was made?"""
        try:
            want = json.loads(self.digests.read_text())
            return verified(self.ram, want["ram"]) and verified(self.state, want["state"])
        except (OSError, ValueError, KeyError, TypeError):
            return False


def snapshots_dir() -> Path:
    return krait_dir(cache_dir(), "snapshots", private=True)


@functools.cache
def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    try:
        out = run([binary, "--version"], timeout=30).stdout
    except Exception:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


# Files named by the command line are the instance's own, or the image's (its digest is
# in the key already); the boot settings go in by their digest.
_PER_INSTANCE = re.compile(r"(hostfwd=[^,]*|path=[^,]*|file=[^,]*|mem-path=[^,]*|unix:[^,]*)")


def key(image: Image, spec: VmSpec, argv: list[str]) -> str:
    """What a snapshot depends on; ``argv`` is the QEMU command line of the template."""
    devices = [_PER_INSTANCE.sub("", a) for a in argv]
    identity = {"image": image.digest, "cmdline": list(spec.cmdline),
                "settings": hashlib.sha256(spec.boot_settings).hexdigest(),
                "memory": spec.memory,
                "vcpus": spec.vcpus, "accel": spec.accel.name, "devices": devices,
                # A volume's files may be in the guest's page cache: another file (or this
                # one changed) is another snapshot.
                "volumes": [_file_identity(v.path) for v in spec.volumes],
                "qemu": qemu_version(argv[0]), "krait": __version__,
                # The template answered these before it was saved (Driver._warm).
                "warmed_by": list(warm_requests(image))}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _file_identity(path: Path) -> list[object]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def for_image(image: Image, spec: VmSpec, argv: list[str]) -> Snapshot:
    folder = snapshots_dir()
    stem = f"{image.name}-{key(image, spec, argv)}"
    return Snapshot(folder / f"{stem}.ram", folder / f"{stem}.state")


def new_ram_file(snapshot: Snapshot) -> Path:
    """An empty RAM file for a template, 0600, under a name of its own until saved."""
    path = snapshot.ram.with_name(f".{snapshot.ram.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    return path


def complete(snapshot: Snapshot, ram: Path) -> None:
    """The template's RAM file becomes the snapshot's (its state was saved already), with
    both files' digests recorded before anything wakes from them."""
    digests = {"ram": sha256_file(ram), "state": sha256_file(snapshot.state)}
    write_atomically(snapshot.digests, json.dumps(digests).encode(), mode=0o600)
    os.replace(ram, snapshot.ram)
    for path in (snapshot.ram, snapshot.state):
        remember_verified(path)
    prune()


def all_snapshots() -> list[Snapshot]:
    folder = snapshots_dir()
    return [Snapshot(state.with_suffix(".ram"), state)
            for state in sorted(folder.glob("*.state"))]


def max_bytes() -> int:
    value = os.environ.get("KRAIT_SNAPSHOT_MAX_MB")
    return int(value) * 2**20 if value and value.isdigit() else DEFAULT_MAX_BYTES


def prune(limit: int | None = None, image_digest: str | None = None,
          keep: Snapshot | None = None) -> list[Snapshot]:
    """Remove snapshots beyond ``limit`` bytes (least recently used first), those that are
    incomplete, and with ``image_digest`` those of that image; never ``keep``."""
    limit = max_bytes() if limit is None else limit
    removed = []
    folder = snapshots_dir()
    for stray in folder.glob(".*"):  # a template that never finished
        if time.time() - stray.stat().st_mtime > 3600:
            stray.unlink(missing_ok=True)
    snapshots = all_snapshots()
    for snap in snapshots:
        gone = not snap.ram.exists() or (image_digest and _image_of(snap) == image_digest)
        if gone and snap != keep:
            snap.remove()
            removed.append(snap)
    alive = [s for s in snapshots if s not in removed and s.exists()]
    alive.sort(key=lambda s: s.state.stat().st_mtime, reverse=True)  # woken: touched
    total = 0
    for snap in alive:
        total += sum(snap.size())
        if total > limit and snap != keep:
            snap.remove()
            removed.append(snap)
    for snap in removed:
        log.info("removed snapshot %s", snap.name)
    return removed


def record_image(snapshot: Snapshot, digest: str) -> None:
    """Which image a snapshot is of (for prune on replace), beside it."""
    write_atomically(snapshot.state.with_suffix(".image"), digest.encode())


def _image_of(snapshot: Snapshot) -> str | None:
    try:
        return snapshot.state.with_suffix(".image").read_text().strip()
    except OSError:
        return None
