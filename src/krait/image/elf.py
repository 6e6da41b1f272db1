"""The ELF side of an image: which shared libraries the interpreter and the extension
modules load (as the dynamic loader finds them), and where each goes in the guest."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from krait.errors import BuildError
from krait.paths import cache_dir, krait_dir, write_atomically
from krait.run import run


def under(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or inside it."""
    # Strings, not path.parents: this runs some ten thousand times a build.
    p, r = str(path), str(root)
    return p == r or p.startswith(r.rstrip("/") + "/")


def elf_closure(binaries: list[Path], unloadable: list[Path] | None = None) -> list[Path]:
    """The binaries plus every shared library they load, as the dynamic loader finds them.
    A library that is not installed is a build error; with ``unloadable``, the binaries
    that need one are listed there instead, and their closure left out."""
    known = _needed_cache()
    size = len(known)
    seen: dict[Path, None] = {}
    if unloadable is None:
        seen.update(dict.fromkeys(_closure(binaries, known)))
    else:
        for binary in dict.fromkeys(binaries):
            try:
                seen.update(dict.fromkeys(_closure([binary], known)))
            except BuildError:
                unloadable.append(binary)
    if len(known) != size:
        write_atomically(_needed_file(), json.dumps(known).encode())
    return sorted(seen)


# Libraries the C library itself opens with dlopen, which no DT_NEEDED names: glibc
# loads libgcc_s to unwind a thread that ends with pthread_exit or is cancelled, and
# CPython ends a daemon thread with pthread_exit when the interpreter shuts down under
# it; without it the process aborts ("libgcc_s.so.1 must be installed for pthread_exit
# to work").
LIBC_DLOPENS = ("libgcc_s.so.1",)


def libc_dlopens(closure: list[Path]) -> list[Path]:
    """The libraries of :data:`LIBC_DLOPENS` beside the C library of ``closure``."""
    return [lib for libc in closure if libc.name == "libc.so.6"
            for lib in (libc.parent / name for name in LIBC_DLOPENS) if lib.is_file()]


def _closure(binaries: list[Path], known: dict[str, list[str]]) -> list[Path]:
    seen: dict[Path, None] = {}
    todo = list(dict.fromkeys(binaries))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        st = path.stat()
        key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
        if key not in known:
            known[key] = [str(p) for p in _needed(path)]
        todo += [Path(p) for p in known[key] if Path(p) not in seen]
    return list(seen)


def _needed_file() -> Path:
    return krait_dir(cache_dir(), "objects") / "needed.json"


def _needed_cache() -> dict[str, list[str]]:
    """What the dynamic loader said each ELF file needs, by path, size and mtime: asking
    it is a process per file, and a build asks about every extension module."""
    try:
        known: dict[str, list[str]] = json.loads(_needed_file().read_text())
        return known
    except (OSError, ValueError):
        return {}


def _needed(path: Path) -> list[Path]:
    # A library a wheel bundles (psycopg_binary.libs/libselinux) finds its siblings
    # through the RPATH of whatever loaded it; listed on its own, it needs a hint.
    system = any(under(path, Path(d)) for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64"))
    env = None if system else {"LD_LIBRARY_PATH": str(path.parent)}
    proc = run([_loader(), "--list", path], check=False, env=env)
    if proc.returncode != 0:
        if "not a dynamic executable" in (proc.stdout + proc.stderr):
            return []
        gone = re.search(r"error while loading shared libraries: ([^:\s]+): cannot open",
                         proc.stderr)
        if gone:  # a library (not an executable) whose own dependency is missing
            lib = gone.group(1)
            raise BuildError(f"{path} needs the shared library {lib}, which is not installed",
                             hint=f"install the package that provides {lib} on the build "
                             "host (or in the app's environment, for a wheel's library)")
        raise BuildError(f"cannot list the libraries {path} needs:\n{proc.stdout}{proc.stderr}")
    out = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            lib = line.split()[0]
            raise BuildError(f"{path} needs the shared library {lib}, which is not installed",
                             hint=f"install the package that provides {lib} on the build host")
        if "=>" in line:
            target = line.split("=>")[1].split("(")[0].strip()
            if target:  # $ORIGIN/../../x.libs comes back with the dots in it
                out.append(Path(os.path.normpath(target)))
        elif line.startswith("/"):
            out.append(Path(line.split()[0]))
    return out


def _loader() -> str:
    for candidate in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"):
        if os.path.exists(candidate):
            return candidate
    raise BuildError("no dynamic loader found on the build host")
