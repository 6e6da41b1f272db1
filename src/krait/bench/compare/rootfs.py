"""Debian roots for the container and the general-purpose VM, made once and cached.

``debootstrap --variant=minbase`` from the mirror this machine's apt already uses,
bookworm, with the packages a user of that kind of system would install: Python for
the container; Python, systemd as init, udev and Debian's cloud kernel for the VM.
The .deb files are kept in a cache shared by both roots.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from krait.bench.compare._common import VariantSkipped
from krait.errors import CommandError
from krait.paths import cache_dir
from krait.run import run

SUITE = "bookworm"
PACKAGES = {
    "container": ("python3",),
    "vm": ("python3", "systemd-sysv", "udev", "initramfs-tools", "linux-image-cloud-amd64",
           "zstd"),
}
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def find_mirror(sources: tuple[Path, ...] = SOURCES) -> str | None:
    """The Debian mirror apt is configured with (one-line or deb822 format), if any."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
        elif src.is_file():
            files.append(src)
    for f in files:
        text = f.read_text(errors="replace")
        urls: list[str] = re.findall(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text,
                                     re.M)
        for url in urls:
            if url.rstrip("/").endswith("/debian"):
                return url
    return None


# What Debian's own "slim" container images leave out; a container user ships that.
SLIM_REMOVE = ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
               "usr/share/locale", "var/cache/debconf/templates.dat-old")


def slim(root: Path) -> None:
    """Remove apt's package lists, documentation and translations (keeping copyright
    files), as debian:bookworm-slim does."""
    for rel in SLIM_REMOVE:
        target = root / rel
        if target.is_file():
            target.unlink()
            continue
        if not target.is_dir():
            continue
        for path in sorted(target.rglob("*"), reverse=True):
            if path.name == "copyright" or (path.is_dir() and not path.is_symlink()):
                continue
            path.unlink()
        for path in sorted(target.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def root_dir(kind: str) -> Path:
    key = hashlib.sha256(" ".join((SUITE, *PACKAGES[kind])).encode()).hexdigest()[:12]
    return cache_dir() / "bench" / "rootfs" / f"{kind}-{SUITE}-{key}"


def build_debian_root(kind: str) -> Path:
    """A cached Debian root of ``kind`` (container | vm); debootstrap it the first time."""
    folder = root_dir(kind)
    root, stamp = folder / "root", folder / "done"
    if stamp.exists():
        if kind == "container" and not (folder / "slim").exists():
            slim(root)
            (folder / "slim").touch()
        return root
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise VariantSkipped(f"no cached Debian root for the {kind} and no `debootstrap`",
                             hint="apt-get install debootstrap")
    mirror = find_mirror()
    if not mirror:
        raise VariantSkipped(f"no cached Debian root for the {kind} and no Debian mirror in "
                             "/etc/apt/sources.list*", hint="configure apt, then rerun")
    if root.exists():
        shutil.rmtree(root)
    folder.mkdir(parents=True, exist_ok=True)
    debs = cache_dir() / "bench" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES[kind])}",
             f"--cache-dir={debs}", SUITE, root, mirror], timeout=3600)
    except CommandError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise VariantSkipped(f"debootstrap of the {kind} root failed (no network?)",
                             hint=e.message.splitlines()[-1]) from e
    # Downloaded packages are not part of the root a user would ship.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    stamp.write_text(mirror + "\n")
    if kind == "container":
        slim(root)
        (folder / "slim").touch()
    return root
