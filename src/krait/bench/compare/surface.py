"""Attack surface, counted: files, executables, setuid/setgid files, shells, packages.

Counted from what is in the artifact (a root folder, a krait image's layers, or the
host's own system folders for a plain process); listening ports are counted at run
time from inside (see payload.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from krait.image.archive import Image

SHELLS = frozenset({"sh", "bash", "rbash", "dash", "zsh", "ksh", "mksh", "ash", "csh", "tcsh",
                    "fish", "busybox"})
# What a host process can see of the host's system (everything the OS installed).
HOST_SYSTEM = ("/bin", "/sbin", "/lib", "/lib64", "/usr", "/etc", "/opt", "/boot", "/var/lib")
DPKG_STATUS = "var/lib/dpkg/status"


def installed_packages(status_text: str | None) -> int:
    """Packages dpkg lists as installed (0 when there is no package database)."""
    if not status_text:
        return 0
    return sum(1 for block in status_text.split("\n\n")
               if "\nStatus: install ok installed" in "\n" + block)


def count_surface(entries: Iterable[tuple[str, int]], dpkg_status: str | None = None,
                  ) -> dict[str, int | None]:
    """Count over (path, st_mode) pairs; directories are not files."""
    files = executables = setuid = shells = 0
    for path, mode in entries:
        if stat.S_ISDIR(mode):
            continue
        files += 1
        if stat.S_ISREG(mode):
            if mode & 0o111:
                executables += 1
            if mode & (stat.S_ISUID | stat.S_ISGID):
                setuid += 1
        name = path.rstrip("/").rsplit("/", 1)[-1]
        parent = path.rstrip("/").rsplit("/", 2)[-2] if path.count("/") >= 2 else ""
        if name in SHELLS and parent in ("bin", "sbin"):
            shells += 1
    return {"files": files, "executables": executables, "setuid": setuid, "shells": shells,
            "packages": installed_packages(dpkg_status)}


def walk(root: Path) -> Iterable[tuple[str, int]]:
    """(path relative to root, lstat mode) for everything under root, links not followed."""
    dev = root.lstat().st_dev
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev != dev:
                dirs.remove(name)  # another filesystem mounted inside (e.g. /proc)
                continue
            yield "/" + os.path.relpath(full, root), st.st_mode


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def surface_of_tree(root: Path) -> dict[str, int | None]:
    return count_surface(walk(root), _read(root / DPKG_STATUS))


def surface_of_image(image: Image) -> dict[str, int | None]:
    return count_surface((f.path, f.mode) for f in image.files())


def surface_of_host(folders: tuple[str, ...] = HOST_SYSTEM) -> dict[str, int | None]:
    """What a plain process shares: the host's installed system."""
    def entries() -> Iterable[tuple[str, int]]:
        for top in folders:
            p = Path(top)
            if p.is_symlink() or not p.is_dir():
                continue  # merged /usr: /bin is a link into /usr/bin
            yield from ((top + path, mode) for path, mode in walk(p))

    return count_surface(entries(), _read(Path("/") / DPKG_STATUS))


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under root (what the root costs on disk, unshared)."""
    total = 0
    dev = root.lstat().st_dev
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(folder, d)).st_dev == dev]
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
