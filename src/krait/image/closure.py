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

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from krait.errors import BuildError
from krait.guest import protocol
from krait.image.context import AppFile, import_roots, link_inside, walk_files
from krait.image.elf import elf_closure, libc_dlopens, under
from krait.image.trace import Distribution, Trace
from krait.image.unimported import package_data, scripts_named

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


@dataclass
class Plan:
    """Every file of the image, and what the build should tell the user about it."""

    files: list[GuestFile]
    # Extension modules of shipped distributions that cannot load here either (a shared
    # library they need is not installed): shipped, and named.
    unloadable: list[str] = field(default_factory=list)
    # Bytes each rule for distributions left out (see _DISTRIBUTION_RULES).
    left_out: dict[str, int] = field(default_factory=dict)


def plan_files(trace: Trace, app_root: Path, app: list[AppFile], include: tuple[str, ...] = (),
               sources: bool = False, exclude: tuple[str, ...] = ()) -> Plan:
    """Every file of the image, without duplicates, sorted by layer and path: the standard
    library as far as the trace and the scan found it used, the app folder whole
    (``app``, see :mod:`krait.image.context`), and every distribution the app uses whole."""
    files: dict[str, GuestFile] = {}
    plan = Plan([])

    def add(f: GuestFile) -> None:
        files.setdefault(f.guest, f)

    entries = sorted(p for p in trace.path if p.is_dir())
    app_entries = [app_root / r for r in import_roots(app_root)]
    shipped = {f for d in trace.distributions.values() for f in d.files}
    modules = kept_modules(trace, exclude)
    loose: set[str] = set()  # top-level packages of modules that no distribution owns
    for name, origin in modules.items():
        if origin in shipped:
            continue
        where = _module_files(name, origin, trace, app_root, app_entries, entries, sources)
        if where and where[0].layer == "app":
            continue  # the app folder goes in whole, below
        for f in where:
            add(f)
        if where and where[0].layer == "packages":
            loose.add(name.split(".")[0])
    # The data of packages no distribution owns (a folder on PYTHONPATH, say), and the
    # __init__ of each data folder: importlib.resources imports such a folder as a package.
    for top in sorted(loose):
        for d in map(Path, trace.packages.get(top, [])):
            root = _path_entry(d, entries)
            if root is None or under(d, trace.stdlib) or under(d, trace.runtime):
                continue
            for path in _package_data(d):
                rel = path.relative_to(root).as_posix()
                if path.suffix == ".py":
                    add(GuestFile("packages", f"{protocol.PACKAGES_DIR}/{rel[:-3]}.pyc", path,
                                  "pyc"))
                else:
                    add(GuestFile("packages", f"{protocol.PACKAGES_DIR}/{rel}", path, "copy"))
    # The data of the standard library's packages the image holds, as other packages
    # bring theirs: lib2to3's grammar, the test package's certificates and helpers.
    for name in sorted(modules):
        for d in map(Path, trace.packages.get(name, [])):
            if under(d, trace.stdlib):
                for path in package_data(d):
                    add(GuestFile("base", str(path), path, "copy"))
    for each in [*app, *(f for item in include for f in _included(app_root, item))]:
        add_app_file(add, each, sources)
    used = {str(origin) for origin in modules.values()}
    for dist in trace.distributions.values():
        for f in _distribution_files(dist, used, exclude, sources, plan.left_out):
            add(f)
    # The interpreter and the extension modules the trace saw, with the libraries they
    # need; and what the process had mapped (libraries opened with dlopen), unless only
    # excluded modules use it.
    traced_elf = {f.host for f in files.values() if f.how == "elf" and str(f.host) in used}
    closure = elf_closure([trace.executable, *sorted(traced_elf)])
    closure = elf_closure([*closure, *libc_dlopens(closure)])
    dropped = [o for n, o in trace.modules.items()
               if n not in modules and _EXTENSION.search(o.name)]
    real = os.path.realpath  # the loader says /lib/..., /proc/self/maps says /usr/lib/...
    kept_libs = {real(p) for p in closure}
    dropped_libs = {real(p) for p in [*elf_closure(dropped), *dropped]} - kept_libs
    module_files = {real(p) for p in trace.modules.values()}
    mapped = [so for so in trace.shared_objects
              if real(so) not in dropped_libs and real(so) not in module_files]
    # Extension modules of the distributions that never ran: what they need comes too,
    # when this host has it (one that cannot load here cannot load in the guest either).
    untraced = [f.host for f in files.values() if f.how == "elf" and f.host not in traced_elf
                and f.layer != "base"]
    unloadable: list[Path] = []
    needed = {*elf_closure(closure + mapped), *elf_closure(untraced, unloadable)}
    plan.unloadable = sorted(map(str, unloadable))
    for path in sorted(needed):
        for f in _library_files(path, trace, app_root, app_entries, entries):
            add(f)
    add(GuestFile("base", str(trace.stdlib / "os.pyc"), trace.stdlib / "os.py", "pyc"))
    if "zoneinfo" in modules and "tzdata" not in trace.distributions:
        for f in _time_zones(trace.tzpath):
            add(f)
    compiled = [(f.layer, f.guest, f.host) for f in files.values() if f.how == "pyc"]
    for layer, guest, host in scripts_named(compiled):
        add(GuestFile(layer, guest, host, "copy"))
    plan.files = sorted(files.values())
    return plan


def _time_zones(tzpath: tuple[Path, ...]) -> list[GuestFile]:
    """The host's time-zone database where zoneinfo looks for it (an app that uses
    zoneinfo and has no tzdata package reads it, as on the host), without the leap-second
    variants (``right/``) and links that lead out of it (``localtime``)."""
    folder = next((p for p in tzpath if p.is_dir()), None)
    if folder is None:
        return []
    out = []
    for path in walk_files(folder):
        rel = path.relative_to(folder).parts
        if rel[0] == "right":
            continue
        if path.is_symlink():
            target = os.readlink(path)
            if os.path.isabs(target) or not under(Path(os.path.realpath(path)), folder):
                continue
            out.append(GuestFile("base", str(path), Path(target), "symlink"))
        else:
            out.append(GuestFile("base", str(path), path, "copy"))
    return out


def add_app_file(add: Callable[[GuestFile], None], f: AppFile, sources: bool) -> None:
    guest = f"{protocol.APP_DIR}/{f.rel}"
    if f.link is not None:
        add(GuestFile("app", guest, Path(f.link), "symlink"))
    elif f.is_source:
        add(GuestFile("app", guest[:-3] + ".pyc", f.path, "pyc"))
        if sources:
            add(GuestFile("app", guest, f.path, "copy"))
    else:
        add(GuestFile("app", guest, f.path,
                      "elf" if _EXTENSION.search(f.path.name) else "copy"))


# What of an installed distribution is left out of the image, each rule with its reason
# (`krait build` reports what each one saved):
# - "tests": its test suites (folders named tests/test), unless a module the app uses
#   lives there;
# - "development": files for building against it (C headers and sources, Cython
#   declarations, static libraries, type stubs);
# - "bytecode": the installer's .pyc files (krait compiles its own, reproducibly);
# - "translations-sources": .po files next to their compiled .mo (gettext reads the .mo).
_TEST_PARTS = frozenset({"tests", "test"})
_DEVELOPMENT = (".h", ".hpp", ".c", ".cc", ".cpp", ".pxd", ".pyx", ".pxi", ".a", ".lib",
                ".pyi", ".f", ".f90")


def _left_out(rel: str, path: Path, used: set[str]) -> str | None:
    parts = rel.split("/")
    if _TEST_PARTS & set(parts[:-1]) and str(path) not in used:
        return "tests"
    if rel.endswith(_DEVELOPMENT):
        return "development"
    if rel.endswith((".pyc", ".pyo")) or "__pycache__" in parts:
        return "bytecode"
    if rel.endswith(".po") and path.with_suffix(".mo").exists():
        return "translations-sources"
    return None


def _distribution_files(dist: Distribution, used: set[str], exclude: tuple[str, ...],
                        sources: bool, left_out: dict[str, int]) -> list[GuestFile]:
    """Every file of ``dist`` that goes into the packages layer."""
    out = []
    for path in dist.files:
        rel = path.relative_to(dist.root).as_posix()
        package = ".".join(rel.split("/")[:-1] if not rel.endswith(".py")
                           else rel[:-3].removesuffix("/__init__").split("/"))
        if package and _excluded(package, exclude):
            continue
        rule = _left_out(rel, path, used)
        if rule:
            left_out[rule] = left_out.get(rule, 0) + path.stat().st_size
            continue
        guest = f"{protocol.PACKAGES_DIR}/{rel}"
        if rel.endswith(".py"):
            out.append(GuestFile("packages", guest[:-3] + ".pyc", path, "pyc"))
            if sources:
                out.append(GuestFile("packages", guest, path, "copy"))
        else:
            out.append(GuestFile("packages", guest, path,
                                 "elf" if _EXTENSION.search(path.name) else "copy"))
    return out


def kept_modules(trace: Trace, exclude: tuple[str, ...]) -> dict[str, Path]:
    """The modules the guest needs: those traced and those found in their sources, minus
    excluded ones and minus what only the build environment's start-up (.pth hooks)
    imported outside the standard library."""
    kept = {}
    for name, origin in {**trace.static, **trace.modules}.items():
        if _excluded(name, exclude):
            continue
        if name in trace.startup and not (under(origin, trace.stdlib)
                                          or under(origin, trace.dynload)):
            continue
        if name in ("sitecustomize", "usercustomize"):  # the build host's, not the app's
            continue
        kept[name] = origin
    return kept


def _path_entry(path: Path, entries: list[Path]) -> Path | None:
    """The longest sys.path entry that holds ``path``."""
    best = None
    for entry in entries:
        if under(path, entry) and (best is None or len(entry.parts) > len(best.parts)):
            best = entry
    return best


def _layer_for(path: Path, app_root: Path, app_entries: list[Path], entry: Path
               ) -> tuple[str, str]:
    """The layer and guest path of a module or library found under sys.path ``entry``."""
    if entry in app_entries:  # the app's own: where it is in the app folder
        return "app", f"{protocol.APP_DIR}/{path.relative_to(app_root).as_posix()}"
    return "packages", f"{protocol.PACKAGES_DIR}/{path.relative_to(entry).as_posix()}"


def _module_files(name: str, origin: Path, trace: Trace, app_root: Path,
                  app_entries: list[Path], entries: list[Path], sources: bool
                  ) -> list[GuestFile]:
    is_source = origin.suffix in _SOURCE_SUFFIXES
    how = "pyc" if is_source else "elf" if _EXTENSION.search(origin.name) else "copy"
    if under(origin, trace.runtime):
        rel = origin.relative_to(trace.runtime).as_posix()
        layer, guest = "base", f"{protocol.RUNTIME_DIR}/{rel}"
    elif under(origin, trace.stdlib) or under(origin, trace.dynload):
        layer, guest = "base", str(origin)
    else:
        entry = _path_entry(origin, entries)
        if entry is None:
            raise BuildError(f"module `{name}` comes from {origin}, outside the app's sys.path",
                             hint="install it in the app's environment")
        layer, guest = _layer_for(origin, app_root, app_entries, entry)
    out = []
    if how == "pyc":
        out.append(GuestFile(layer, guest[:-3] + ".pyc", origin, "pyc"))
        if sources:
            out.append(GuestFile(layer, guest, origin, "copy"))
    else:
        out.append(GuestFile(layer, guest, origin, how))
    return out


def _library_files(path: Path, trace: Trace, app_root: Path, app_entries: list[Path],
                   entries: list[Path]) -> list[GuestFile]:
    """Where a shared object goes: libraries that wheels bundle (numpy.libs/,
    psycopg_binary.libs/) and extension modules move with their package to
    /krait/packages, keeping their relative layout, so RPATH $ORIGIN/../x.libs still
    finds them; system libraries keep their host path."""
    path = Path(os.path.normpath(path))
    if not (under(path, trace.stdlib) or under(path, trace.dynload)):
        entry = _path_entry(path, entries)
        if entry is not None:
            layer, guest = _layer_for(path, app_root, app_entries, entry)
            return [GuestFile(layer, guest, path, "elf")]
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


def _included(app_root: Path, item: str) -> list[AppFile]:
    """``include``: files the app folder's rules leave out (hidden ones, say), taken all
    the same; links inside the folder stay links, links out of it are refused."""
    root = app_root.resolve()
    path = Path(os.path.normpath(root / item))
    if not under(path, root):
        raise BuildError(f"include = {item!r} points outside the app folder",
                         hint="include paths are relative to the app and stay inside it")
    if not (path.exists() or path.is_symlink()):
        raise BuildError(f"include = {item!r}: {path} does not exist",
                         hint="fix the path in `include`, relative to the app folder")
    found = []
    for each in [path] if not path.is_dir() or path.is_symlink() else walk_files(path):
        rel = each.relative_to(root).as_posix()
        found.append(AppFile(rel, each, link_inside(each, root) if each.is_symlink() else None))
    return found


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
