"""From a trace to the list of files an image needs, and where each goes in the guest.

Three layers, from the least to the most often changed:

- ``base``: the interpreter, the shared libraries it and the extension modules
  need (their ELF closure, dynamic loader included), the standard library as far
  as the app uses it, and krait's guest runtime. Guest paths equal host paths, so
  the interpreter finds its prefix exactly as it does on the host.
- ``packages``: third-party modules from the app's environment, under /krait/packages.
- ``app``: the app's own modules and included files, under /krait/app.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from krait.errors import BuildError
from krait.guest import protocol
from krait.image.trace import Trace
from krait.paths import cache_dir, write_atomically
from krait.run import run

LAYERS = ("base", "packages", "app")
_SOURCE_SUFFIXES = (".py",)
_EXTENSION = re.compile(r"\.(cpython-[^.]+\.so|abi3\.so|so)$")


@dataclass(frozen=True, order=True)
class GuestFile:
    """One file to put in the image: read ``host``, write it at ``guest`` in ``layer``."""

    layer: str
    guest: str
    host: Path
    how: str  # "pyc" (compile), "elf" (strip), "copy", "symlink" (host is the link target)


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    """``x`` excludes x, its submodules, and its C half ``_x`` (ssl and _ssl)."""
    return any(name in (x, "_" + x) or name.startswith(x + ".") for x in exclude)


def plan_files(trace: Trace, app_root: Path, include: tuple[str, ...],
               sources: bool = False, exclude: tuple[str, ...] = (),
               ignore: tuple[str, ...] = ()) -> list[GuestFile]:
    """Every file of the image, without duplicates, sorted by layer and path."""
    files: dict[str, GuestFile] = {}

    def add(f: GuestFile) -> None:
        files.setdefault(f.guest, f)

    entries = sorted(p for p in trace.path if p.is_dir())
    modules = kept_modules(trace, exclude)
    for name, origin in modules.items():
        for f in _module_files(name, origin, trace, app_root, entries, sources):
            add(f)
    packaged = {n.split(".")[0] for n, f in modules.items()
                if _module_files(n, f, trace, app_root, entries, False)[0].layer == "packages"}
    for top in sorted(packaged):
        for dist in map(Path, trace.distributions.get(top, [])):
            root = _path_entry(dist, entries)
            if root is None:
                continue
            for path in sorted(dist.rglob("*")):
                if path.is_file():
                    rel = path.relative_to(root).as_posix()
                    add(GuestFile("packages", f"{protocol.PACKAGES_DIR}/{rel}", path, "copy"))
    # Package data (templates, zone files, certificate bundles), and the __init__ of every
    # folder of it: importlib.resources imports such a folder as a package.
    for top in sorted({n.split(".")[0] for n in modules}):
        for d in map(Path, trace.packages.get(top, [])):
            root = _path_entry(d, entries)
            if (root is None or root == app_root or _under(d, trace.stdlib)
                    or _under(d, trace.runtime)):
                continue
            for path in _package_data(d):
                rel = path.relative_to(root).as_posix()
                if path.suffix == ".py":
                    add(GuestFile("packages", f"{protocol.PACKAGES_DIR}/{rel[:-3]}.pyc", path,
                                  "pyc"))
                else:
                    add(GuestFile("packages", f"{protocol.PACKAGES_DIR}/{rel}", path, "copy"))
    for path in app_data(app_root, ignore):
        add(GuestFile("app", f"{protocol.APP_DIR}/{path.relative_to(app_root).as_posix()}",
                      path, "copy"))
    for item in include:
        for f in _included(app_root, item):
            add(f)
    # The interpreter and extension modules, with the libraries they need; and what the
    # process had mapped (libraries opened with dlopen), unless only excluded modules use it.
    elf = [trace.executable, *(f.host for f in files.values() if f.how == "elf")]
    closure = elf_closure(elf)
    dropped = [o for n, o in trace.modules.items()
               if n not in modules and _EXTENSION.search(o.name)]
    real = os.path.realpath  # the loader says /lib/..., /proc/self/maps says /usr/lib/...
    kept_libs = {real(p) for p in closure}
    dropped_libs = {real(p) for p in [*elf_closure(dropped), *dropped]} - kept_libs
    module_files = {real(p) for p in trace.modules.values()}
    mapped = [so for so in trace.shared_objects
              if real(so) not in dropped_libs and real(so) not in module_files]
    for path in elf_closure(closure + mapped):
        for f in _library_files(path, trace, app_root, entries):
            add(f)
    add(GuestFile("base", str(trace.stdlib / "os.pyc"), trace.stdlib / "os.py", "pyc"))
    return sorted(files.values())


def kept_modules(trace: Trace, exclude: tuple[str, ...]) -> dict[str, Path]:
    """The modules the guest needs: those traced and those found in their sources, minus
    excluded ones and minus what only the build environment's start-up (.pth hooks)
    imported outside the standard library."""
    kept = {}
    for name, origin in {**trace.static, **trace.modules}.items():
        if _excluded(name, exclude):
            continue
        if name in trace.startup and not (_under(origin, trace.stdlib)
                                          or _under(origin, trace.dynload)):
            continue
        if name in ("sitecustomize", "usercustomize"):  # the build host's, not the app's
            continue
        kept[name] = origin
    return kept


def _under(path: Path, root: Path) -> bool:
    # Strings, not path.parents: this runs some ten thousand times a build.
    p, r = str(path), str(root)
    return p == r or p.startswith(r.rstrip("/") + "/")


def _path_entry(path: Path, entries: list[Path]) -> Path | None:
    """The longest sys.path entry that holds ``path``."""
    best = None
    for entry in entries:
        if _under(path, entry) and (best is None or len(entry.parts) > len(best.parts)):
            best = entry
    return best


def _layer_for(path: Path, app_root: Path, entry: Path) -> tuple[str, str]:
    if _under(path, app_root) and entry == app_root:
        return "app", protocol.APP_DIR
    return "packages", protocol.PACKAGES_DIR


def _module_files(name: str, origin: Path, trace: Trace, app_root: Path,
                  entries: list[Path], sources: bool) -> list[GuestFile]:
    is_source = origin.suffix in _SOURCE_SUFFIXES
    how = "pyc" if is_source else "elf" if _EXTENSION.search(origin.name) else "copy"
    if _under(origin, trace.runtime / "krait"):
        rel = origin.relative_to(trace.runtime).as_posix()
        layer, guest = "base", f"{protocol.RUNTIME_DIR}/{rel}"
    elif _under(origin, trace.stdlib) or _under(origin, trace.dynload):
        layer, guest = "base", str(origin)
    else:
        entry = _path_entry(origin, entries)
        if entry is None:
            raise BuildError(f"module `{name}` comes from {origin}, outside the app's sys.path",
                             hint="install it in the app's environment")
        layer, base = _layer_for(origin, app_root, entry)
        guest = f"{base}/{origin.relative_to(entry).as_posix()}"
    out = []
    if how == "pyc":
        out.append(GuestFile(layer, guest[:-3] + ".pyc", origin, "pyc"))
        if sources:
            out.append(GuestFile(layer, guest, origin, "copy"))
    else:
        out.append(GuestFile(layer, guest, origin, how))
    return out


def _library_files(path: Path, trace: Trace, app_root: Path,
                   entries: list[Path]) -> list[GuestFile]:
    """Where a shared object goes: libraries that wheels bundle (numpy.libs/,
    psycopg_binary.libs/) and extension modules move with their package to
    /krait/packages, keeping their relative layout, so RPATH $ORIGIN/../x.libs still
    finds them; system libraries keep their host path."""
    path = Path(os.path.normpath(path))
    if not (_under(path, trace.stdlib) or _under(path, trace.dynload)):
        entry = _path_entry(path, entries)
        if entry is not None:
            layer, base = _layer_for(path, app_root, entry)
            return [GuestFile(layer, f"{base}/{path.relative_to(entry).as_posix()}", path,
                              "elf")]
    return host_path_files(path)


# Files a package ships for building against it, not for running it.
_DEVELOPMENT_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".h", ".hpp", ".c", ".cc", ".cpp",
                         ".pxd", ".pyx", ".pxi", ".a", ".lib", ".f", ".f90")
_TEST_FOLDERS = ("tests", "test", "testing", "__pycache__")


def _package_data(folder: Path) -> list[Path]:
    """Non-code files anywhere inside an imported package, without its test suites; and
    the ``__init__.py`` of each folder that holds such files."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _TEST_FOLDERS)
        data = [Path(dirpath, fn) for fn in sorted(filenames)
                if not fn.endswith(_DEVELOPMENT_SUFFIXES) and fn != "py.typed"]
        found += data
        if data and Path(dirpath) != folder and "__init__.py" in filenames:
            found.append(Path(dirpath, "__init__.py"))
    return found


# What an app folder holds besides the app: its build files, environments, tests, and
# keys (TLS keys reach an image only through tls-key).
_NOT_APP_DATA_FOLDERS = ("__pycache__", "node_modules", "tests", "test", "build", "dist")
_NOT_APP_DATA_FILES = ("pyproject.toml", "krait.toml", "krait.lock", "setup.py", "setup.cfg",
                       "MANIFEST.in", "poetry.lock", "uv.lock", "Pipfile", "Pipfile.lock")
_NOT_APP_DATA_SUFFIXES = (".py", ".pyc", ".pyi", ".krait", ".pem", ".key")


def app_data(app_root: Path, ignore: tuple[str, ...] = ()) -> list[Path]:
    """The app folder's own data files (templates, static files, data), which go into the
    app layer as they are; ``ignore`` holds glob patterns (relative to the app) to leave
    out as well."""
    found = []
    for dirpath, dirnames, filenames in os.walk(app_root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d not in _NOT_APP_DATA_FOLDERS
            and not d.endswith(".egg-info") and not (here / d / "pyvenv.cfg").exists())
        for fn in sorted(filenames):
            path = here / fn
            rel = path.relative_to(app_root)
            if (fn.startswith(".") or fn in _NOT_APP_DATA_FILES
                    or fn.endswith(_NOT_APP_DATA_SUFFIXES)
                    or (fn.startswith("requirements") and fn.endswith(".txt"))
                    or any(rel.match(pattern) for pattern in ignore)
                    or not path.is_file()):
                continue
            found.append(path)
    return found


def _included(app_root: Path, item: str) -> list[GuestFile]:
    path = (app_root / item).resolve()
    if not _under(path, app_root):
        raise BuildError(f"include = {item!r} points outside the app folder",
                         hint="include paths are relative to the app and stay inside it")
    if not path.exists():
        raise BuildError(f"include = {item!r}: {path} does not exist",
                         hint="fix the path in `include`, relative to the app folder")
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [GuestFile("app", f"{protocol.APP_DIR}/{p.relative_to(app_root).as_posix()}", p,
                      "copy") for p in paths]


def elf_closure(binaries: list[Path]) -> list[Path]:
    """The binaries plus every shared library they load, as the dynamic loader finds them."""
    seen: dict[Path, None] = {}
    todo = list(dict.fromkeys(binaries))
    known = _needed_cache()
    added = False
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        st = path.stat()
        key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
        if key not in known:
            known[key] = [str(p) for p in _needed(path)]
            added = True
        todo += [Path(p) for p in known[key] if Path(p) not in seen]
    if added:
        write_atomically(_needed_file(), json.dumps(known).encode())
    return sorted(seen)


def _needed_file() -> Path:
    return cache_dir() / "objects" / "needed.json"


def _needed_cache() -> dict[str, list[str]]:
    """What the dynamic loader said each ELF file needs, by path, size and mtime: asking
    it is a process per file, and a build asks about every extension module."""
    try:
        known: dict[str, list[str]] = json.loads(_needed_file().read_text())
        return known
    except (OSError, ValueError):
        _needed_file().parent.mkdir(parents=True, exist_ok=True)
        return {}


def _needed(path: Path) -> list[Path]:
    # A library a wheel bundles (psycopg_binary.libs/libselinux) finds its siblings
    # through the RPATH of whatever loaded it; listed on its own, it needs a hint.
    system = any(_under(path, Path(d)) for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64"))
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


def host_path_files(path: Path) -> list[GuestFile]:
    """``path`` as the guest should see it, symlinks on the way included (/lib -> usr/lib)."""
    out = []
    cur = Path("/")
    parts = path.parts[1:]
    for i, part in enumerate(parts):
        cur = cur / part
        if cur.is_symlink():
            target = os.readlink(cur)
            out.append(GuestFile("base", str(cur), Path(target), "symlink"))
            resolved = Path(os.path.normpath(cur.parent / target))
            return out + host_path_files(resolved.joinpath(*parts[i + 1:]))
    out.append(GuestFile("base", str(cur), cur, "elf"))
    return out
