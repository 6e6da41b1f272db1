"""Where krait keeps its caches and instance state."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Kernel builds, cached image layers, unpacked images. Safe to delete."""
    if "KRAIT_CACHE" in os.environ:
        path = Path(os.environ["KRAIT_CACHE"])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "krait"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """One folder per instance (see krait.fleet)."""
    path = Path(os.environ.get("KRAIT_STATE", Path.home() / ".local" / "state" / "krait"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so that readers, and other krait processes writing the same cache
    entry at the same time, never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
