"""Where krait keeps its caches and instance state, and what makes a folder krait's.

krait trusts what is under three roots: the cache (``KRAIT_CACHE``), the kernel cache
(``KRAIT_KERNEL_CACHE``, by default the cache's ``kernel/``) and the state
(``KRAIT_STATE``). Each root, and each folder krait makes under it, must be a folder
owned by the user krait runs as and writable by no one else, and a folder under a root
must not be a symlink: otherwise another local user could plant a guest runtime that a
build runs, a disk that an export ships, or a link that a clean-up follows out of
krait's folders. Everything is checked with ``lstat``; a violation is an error naming
the folder and the fix, never a silent repair.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from krait.errors import ConfigError

# Whoever else may write a folder may plant what krait then runs, boots or deletes.
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _refuse(path: Path, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path} {problem}: krait does not trust what is in it", hint=fix)


def _check(path: Path, st: os.stat_result, private: bool) -> None:
    """``st`` (an lstat of ``path``) is a folder of ours that no one else may write."""
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symlink", f"remove the link ({path}) and run krait again")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a folder", f"move {path} away and run krait again")
    if st.st_uid != os.geteuid():
        raise _refuse(path, f"belongs to another user (uid {st.st_uid})",
                      "use a folder of your own (KRAIT_STATE, KRAIT_CACHE, "
                      "KRAIT_KERNEL_CACHE)")
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise _refuse(path, f"is writable by other users (mode {stat.S_IMODE(st.st_mode):o})",
                      f"remove it (others may have put files there) or, if only you could "
                      f"ever write it, `chmod go-w {path}`")
    if private and st.st_mode & 0o077:
        # Readable by others is no danger to us, only to what the folder holds: tighten it.
        os.chmod(path, 0o700)


def _made(path: Path, private: bool) -> None:
    """Make ``path`` if missing, with krait's mode whatever the umask."""
    mode = 0o700 if private else 0o755
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    os.chmod(path, mode)


def checked_root(path: Path, private: bool = False) -> Path:
    """A root of krait's folders (a user's choice, so it may be reached through symlinks),
    made if missing, checked to be the user's own."""
    path = Path(os.path.abspath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _made(path, private)
        link, st = path.lstat(), path.stat()
    except OSError as e:
        raise ConfigError(f"{path} cannot be krait's folder: {e.strerror}",
                          hint="use a folder of your own (KRAIT_STATE, KRAIT_CACHE, "
                          "KRAIT_KERNEL_CACHE)") from None
    # A link the user (or root) made is the user's choice; one another user planted in
    # a shared folder such as /tmp is not.
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
        raise _refuse(path, f"is a symlink another user made (uid {link.st_uid})",
                      "use a folder of your own")
    _check(path, st, private)
    return path


def krait_dir(root: Path, *names: str, private: bool = False) -> Path:
    """The folder ``root/names...`` (``root`` checked already), each level made if missing
    and checked with lstat: a real folder, ours, writable by no one else."""
    path = root
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{name!r} is not one folder's name")
        path = path / name
        _made(path, private)
        _check(path, path.lstat(), private)
    return path


def cache_dir() -> Path:
    """Kernel builds, cached image layers, unpacked images. Safe to delete.

    Its own entries are checked too (each ours, writable by no one else, not a symlink),
    so a folder someone planted while it was open to them is refused, not used."""
    root = checked_root(Path(os.environ.get("KRAIT_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "krait"))
    with os.scandir(root) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
                _check(Path(entry.path), st, private=False)
            elif st.st_uid != os.geteuid() or st.st_mode & _WRITABLE_BY_OTHERS:
                raise _refuse(Path(entry.path), "is not yours alone",
                              f"remove it, or the whole cache ({root})")
    return root


def kernel_cache_dir() -> Path:
    """Kernel sources, objects and builds: gigabytes, so it may live apart from the rest
    of the cache (``KRAIT_KERNEL_CACHE``), checked as a root of its own."""
    value = os.environ.get("KRAIT_KERNEL_CACHE")
    return checked_root(Path(value)) if value else krait_dir(cache_dir(), "kernel")


def state_dir() -> Path:
    """One folder per instance (see krait.fleet); private: the sockets in it take commands."""
    return checked_root(Path(os.environ.get("KRAIT_STATE")
                             or Path.home() / ".local" / "state" / "krait"), private=True)


def is_real_dir(path: Path) -> bool:
    """A folder and not a symlink to one (what krait lists and removes under its roots)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def open_nofollow(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A file descriptor for ``path`` itself, never for what a symlink there names; and
    for reading, only a regular file (a FIFO would block, a device never end)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_bounded(path: Path, limit: int) -> bytes:
    """A small file krait wrote (a record, a stamp), never more than ``limit`` bytes of
    it; OSError if it is missing, a link, not a regular file or larger."""
    with open(open_nofollow(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path} is over {limit} bytes")
    return data


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (made if missing, never truncated and
    never reached through a symlink) for the block."""
    try:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    except OSError as e:
        raise ConfigError(f"cannot lock {path}: {e.strerror or e}",
                          hint=f"remove {path} (krait makes it again)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
