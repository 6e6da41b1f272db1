"""Building krait's kernel from Debian's ``linux-source`` package, and its cache.

The configuration is ``make allnoconfig`` plus the fragment files next to this
module (Lupine Linux's recipe: start from nothing, add what one Python program
needs). A built kernel is cached under a key made of the source package's version,
the merged fragments and this recipe's version, so it is built once per machine.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from krait.errors import CommandError, KernelError
from krait.paths import kernel_cache_dir, locked
from krait.run import run, spawn

SOURCE_PACKAGE = "linux-source-6.1"
FRAGMENTS = Path(__file__).with_name("fragments")
# Small patches to Debian's source, applied in name order (see each file's header).
PATCHES = Path(__file__).with_name("patches")
# Bump when the way we build changes in a way the key would not see.
# 3: a reproducible version string (KBUILD_BUILD_TIMESTAMP, _USER, _HOST, _VERSION).
RECIPE = 3


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot: ``image`` is what QEMU's -kernel receives."""

    image: Path
    version: str  # e.g. "6.1.192 (linux-source-6.1 6.1.192-2)" or "custom"
    key: str  # cache key, or the sha256 of a custom kernel file
    config: Path | None = None


def kernel_format(path: Path) -> str:
    """'elf' (booted through PVH, nothing to decompress) or 'bzimage'."""
    with path.open("rb") as f:
        head = f.read(0x206)
    if head[:4] == b"\x7fELF":
        return "elf"
    if head[0x202:0x206] == b"HdrS":
        return "bzimage"
    return "unknown"


def fragment_files() -> list[Path]:
    return sorted(FRAGMENTS.glob("*.config"))


def patch_files() -> list[Path]:
    return sorted(PATCHES.glob("*.patch"))


def _patches_text() -> str:
    return "".join(f"# --- {p.name}\n{p.read_text()}" for p in patch_files())


def merged_config() -> str:
    return "".join(f"# --- {p.name}\n{p.read_text()}" for p in fragment_files())


def wanted_options(config: str) -> dict[str, str]:
    """CONFIG_X -> value for every option the fragments set."""
    wanted = {}
    for line in config.splitlines():
        line = line.strip()
        if line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            wanted[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted[line[2:-11]] = "n"
    return wanted


def find_source() -> tuple[Path, str]:
    """The linux-source tarball and the package version, or a KernelError saying how to get it."""
    tarballs = sorted(glob.glob(f"/usr/src/{SOURCE_PACKAGE}.tar.*"))
    if not tarballs:
        raise KernelError(
            f"the kernel source package is not installed (no /usr/src/{SOURCE_PACKAGE}.tar.*)",
            hint=f"install it with `apt-get install {SOURCE_PACKAGE}` (or `make deps`), "
            "or boot another kernel with --kernel PATH",
        )
    try:
        version = run(["dpkg-query", "-W", "-f", "${Version}", SOURCE_PACKAGE]).stdout.strip()
    except CommandError:
        st = os.stat(tarballs[-1])
        version = f"unpackaged-{st.st_size}-{int(st.st_mtime)}"
    return Path(tarballs[-1]), version


def cache_key(source_version: str, config: str) -> str:
    h = hashlib.sha256(f"{RECIPE}\0{SOURCE_PACKAGE}\0{source_version}\0{config}".encode()
                       + _patches_text().encode())
    return h.hexdigest()[:16]


def find_kernel() -> Kernel | None:
    """The cached kernel for the current fragments, if it was built already."""
    _, version = find_source()
    return _cached_kernel(cache_key(version, merged_config()))


def _cached_kernel(key: str) -> Kernel | None:
    info = kernel_cache_dir() / key / "kernel.json"
    if not info.is_file():
        return None
    meta = json.loads(info.read_text())
    folder = info.parent
    return Kernel(folder / "vmlinux", meta["version"], key, folder / "config")


def custom_kernel(path: Path) -> Kernel:
    """A kernel the user brings (--kernel PATH): used as it is."""
    if not path.is_file():
        raise KernelError(f"--kernel {path}: no such file")
    if kernel_format(path) == "unknown":
        raise KernelError(f"--kernel {path}: not a bzImage or an ELF vmlinux",
                          hint="pass arch/x86/boot/bzImage or vmlinux from a kernel build")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Kernel(path.resolve(), "custom", digest[:16])


def build_kernel(on_line: Callable[[str], None] | None = None, jobs: int | None = None) -> Kernel:
    """Build (or find in the cache) the kernel for the current fragments.

    Builds share one object folder per source version, so only one runs at a time:
    a second caller waits for the first and then finds its kernel in the cache.
    """
    with locked(kernel_cache_dir() / ".lock"):
        return _build_kernel_locked(on_line, jobs)


def _build_kernel_locked(on_line: Callable[[str], None] | None, jobs: int | None) -> Kernel:
    tarball, version = find_source()
    config = merged_config()
    key = cache_key(version, config)
    cached = _cached_kernel(key)
    if cached:
        return cached
    for tool in ("make", "gcc", "flex", "bison", "bc"):
        if not shutil.which(tool):
            raise KernelError(f"building the kernel needs `{tool}`, which is not installed",
                              hint="run `make deps` (apt-get install build-essential flex "
                              "bison bc libelf-dev libssl-dev)")
    root = kernel_cache_dir()
    src = _unpack(tarball, version, root)
    objdir = root / f"obj-{src.parent.name.removeprefix('src-')}"
    objdir.mkdir(parents=True, exist_ok=True)
    fragment = objdir / "krait.config"
    fragment.write_text(config)
    make: list[str | os.PathLike[str]] = ["make", "-C", src, f"O={objdir}"]
    env = reproducible_env(tarball)
    run([*make, "allnoconfig", f"KCONFIG_ALLCONFIG={fragment}"], env=env)
    _check_config(objdir / ".config", wanted_options(config))
    tail: list[str] = []
    with spawn([*make, f"-j{jobs or os.cpu_count() or 1}", "vmlinux", "bzImage"],
               env=env) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-30:], line]
            if on_line:
                on_line(line)
        code = proc.wait()
    if code != 0:
        raise KernelError("the kernel build failed:\n" + "\n".join(tail),
                          hint=f"the build tree is {objdir}")
    out = root / key
    tmp = root / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The ELF vmlinux boots through PVH: QEMU loads it as it is, nothing to decompress.
    run(["objcopy", "--strip-debug", "--remove-section=.comment", objdir / "vmlinux",
         tmp / "vmlinux"])
    shutil.copy2(objdir / "arch/x86/boot/bzImage", tmp / "bzImage")
    shutil.copy2(objdir / ".config", tmp / "config")
    release = (objdir / "include/config/kernel.release").read_text().strip()
    meta = {"version": f"{release} ({SOURCE_PACKAGE} {version})", "key": key}
    (tmp / "kernel.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return Kernel(out / "vmlinux", meta["version"], key, out / "config")


def reproducible_env(tarball: Path) -> dict[str, str]:
    """What kbuild writes into the kernel's version string, fixed: the build host, user,
    time and count of earlier builds in the same tree would otherwise make every
    machine's kernel (and image digest) different. The time is the source package's own
    (the same .deb gives the same one)."""
    stamp = time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(tarball.stat().st_mtime))
    return {"KBUILD_BUILD_TIMESTAMP": stamp, "KBUILD_BUILD_USER": "krait",
            "KBUILD_BUILD_HOST": "krait", "KBUILD_BUILD_VERSION": "1"}


def count_build_steps(line: str) -> bool:
    """True for the lines of kbuild's output that stand for one compiled object."""
    return line.lstrip().startswith(("CC ", "AS ", "LD ", "AR "))


def _unpack(tarball: Path, version: str, root: Path) -> Path:
    """The source tree for ``version`` with krait's patches applied (one tree per patch set)."""
    patches = _patches_text()
    suffix = f"-p{hashlib.sha256(patches.encode()).hexdigest()[:8]}" if patches else ""
    dest = root / f"src-{version}{suffix}"
    stamp = dest / ".krait-unpacked"
    if not stamp.exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        run(["tar", "-xf", tarball, "-C", dest])
        tree = next(p for p in dest.iterdir() if p.is_dir())
        for patch in patch_files():
            run(["patch", "-p1", "--forward", "-i", patch.resolve()], cwd=tree)
        stamp.touch()
    return next(p for p in dest.iterdir() if p.is_dir())


def _check_config(dotconfig: Path, wanted: dict[str, str]) -> None:
    """Kconfig silently drops options whose dependencies are off; we do not."""
    have = {}
    for line in dotconfig.read_text().splitlines():
        if line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            have[name] = value
    lost = [f"{k}={v}" for k, v in wanted.items() if have.get(k, "n") != v]
    if lost:
        raise KernelError(
            "these kernel options did not survive `make allnoconfig` (a dependency is off): "
            + ", ".join(lost),
            hint=f"add the options they depend on to a fragment in {FRAGMENTS}",
        )


