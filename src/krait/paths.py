"""Where krait keeps its caches and instance state."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from krait.errors import ConfigError


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
    return private_dir(Path(os.environ.get("KRAIT_STATE",
                                           Path.home() / ".local" / "state" / "krait")))


def private_dir(path: Path) -> Path:
    """A folder only we can enter (0700), made if missing. One that another user owns is
    refused: the sockets inside it (QMP, the control port, serve's) take commands."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{path} belongs to another user (uid {st.st_uid})",
                          hint="use a folder of your own (KRAIT_STATE, KRAIT_CACHE)")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[int]:
    """A file descriptor to fill: when the block ends well, the file becomes ``path``
    whole; however else it ends, nothing is left. Readers, and other krait processes
    writing the same cache entry at the same time, never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        yield fd
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_file(path, mode) as fd, open(fd, "wb", closefd=False) as f:
        f.write(data)
