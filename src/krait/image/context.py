"""The app folder as the build context: what of it goes into the image.

All of it, as on the host, whether or not the trace saw a file used: frameworks import
the app's own modules by name (Django's ``ROOT_URLCONF``) and read its files by path.
Left out: what is not the app but lives beside it (virtual environments, caches, VCS
and other hidden folders, build output, tests, the images krait wrote), secrets (keys
reach an image only through ``tls-key``), what ``ignore`` names, and the packages of
modules ``exclude`` names.

A symbolic link is kept as a link when it points inside the folder; one that points
outside is refused, as Docker's build context and git do: a build must never copy the
bytes of ``/etc/shadow`` because a link in an app folder named it.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from krait.errors import BuildError

# Folders beside the app, not of it.
_NOT_APP_FOLDERS = frozenset({"__pycache__", "node_modules", "tests", "test", "build",
                              "dist", "site-packages"})
# The app's build files; the lock is krait's own.
_NOT_APP_FILES = frozenset({"pyproject.toml", "krait.toml", "krait.lock", "setup.py",
                            "setup.cfg", "MANIFEST.in", "poetry.lock", "uv.lock", "Pipfile",
                            "Pipfile.lock", "conftest.py"})
# Bytecode krait makes itself, its images, and private keys.
_NOT_APP_SUFFIXES = (".pyc", ".pyo", ".krait", ".pem", ".key")


@dataclass(frozen=True, order=True)
class AppFile:
    """One file of the app folder: ``rel`` (posix, relative to the folder), where it is,
    and for a link, what it points to (relative, inside the folder)."""

    rel: str
    path: Path
    link: str | None = None

    @property
    def is_source(self) -> bool:
        return self.link is None and self.rel.endswith(".py")


def import_roots(root: Path) -> tuple[str, ...]:
    """The folders of the app that are on ``sys.path`` (relative): the app folder, and
    ``src`` in a src layout (a ``src`` folder that is not itself a package)."""
    src = root / "src"
    if src.is_dir() and not src.is_symlink() and not (src / "__init__.py").exists():
        return ("", "src")
    return ("",)


def module_name(rel: str, roots: tuple[str, ...]) -> str | None:
    """The module a source file of the app is when imported from its import roots
    (``src/pkg/__init__.py`` -> ``pkg``), or None if it cannot be imported."""
    for root in sorted(roots, key=len, reverse=True):
        prefix = f"{root}/" if root else ""
        if rel.startswith(prefix):
            parts = rel[len(prefix):].split("/")
            break
    else:
        return None
    stem = parts[-1].removesuffix(".py")
    parts = parts[:-1] if stem == "__init__" else [*parts[:-1], stem]
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _excluded(module: str | None, exclude: tuple[str, ...]) -> bool:
    return module is not None and any(module == x or module.startswith(x + ".")
                                      for x in exclude)


def app_files(root: Path, ignore: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
              ) -> list[AppFile]:
    """Every file of the app folder ``root`` that goes into the image, sorted."""
    root = root.resolve()
    roots = import_roots(root)
    found: list[AppFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            folder = here / d
            rel = folder.relative_to(root).as_posix()
            if (d.startswith(".") or d in _NOT_APP_FOLDERS or d.endswith(".egg-info")
                    or (folder / "pyvenv.cfg").exists() or _ignored(rel, ignore)
                    or _excluded(module_name(rel + "/__init__.py", roots), exclude)):
                continue
            if folder.is_symlink():
                found.append(AppFile(rel, folder, link_inside(folder, root)))
                continue
            kept.append(d)
        dirnames[:] = kept
        for fn in sorted(filenames):
            path = here / fn
            rel = path.relative_to(root).as_posix()
            if (fn.startswith(".") or fn in _NOT_APP_FILES or fn.endswith(_NOT_APP_SUFFIXES)
                    or (fn.startswith("requirements") and fn.endswith(".txt"))
                    or _ignored(rel, ignore)
                    or (fn.endswith(".py") and _excluded(module_name(rel, roots), exclude))):
                continue
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found.append(AppFile(rel, path, link_inside(path, root)))
            elif stat.S_ISREG(mode):
                found.append(AppFile(rel, path))
            # sockets, FIFOs, devices: not files an image can hold
    return sorted(found)


def _ignored(rel: str, ignore: tuple[str, ...]) -> bool:
    # A folder that matches is left out whole.
    return any(Path(rel).match(pattern) for pattern in ignore)


def walk_files(folder: Path) -> list[Path]:
    """The regular files and links under ``folder``, without following links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        found += [here / d for d in dirnames if (here / d).is_symlink()]
        found += [here / f for f in filenames
                  if stat.S_ISREG(mode := (here / f).lstat().st_mode) or stat.S_ISLNK(mode)]
    return sorted(found)


def link_inside(link: Path, root: Path) -> str:
    """The target of ``link`` relative to the link's folder, if it resolves inside
    ``root``; anything else is a build error."""
    target = os.readlink(link)
    resolved = Path(os.path.realpath(link))
    rel = link.relative_to(root).as_posix()
    if not (resolved == root or root in resolved.parents):
        raise BuildError(f"{rel} is a symbolic link to {target}, outside the app folder",
                         hint="an image holds only what is in the app folder: copy the "
                         f"files in, or leave the link out with ignore = [\"{rel}\"]")
    if not resolved.exists():
        raise BuildError(f"{rel} is a symbolic link to {target}, which does not exist",
                         hint=f"fix or remove the link, or ignore = [\"{rel}\"]")
    return os.path.relpath(resolved, os.path.realpath(link.parent))


# Standard-library modules that nothing serving requests imports (tools for developing,
# testing and teaching): an app module of the same name is only worth a note.
_HARMLESS = frozenset({"test", "this", "antigravity", "idlelib", "turtledemo", "turtle",
                       "tkinter", "lib2to3", "pydoc_data", "ensurepip", "venv", "doctest",
                       "pdb", "pydoc", "tabnanny", "msilib", "winreg", "winsound", "nturl2path"})


def check_shadowing(files: list[AppFile], roots: tuple[str, ...]) -> list[str]:
    """An app module named like a standard-library one (``types.py``, ``site.py``) hides
    it from everything that imports it, the standard library included: refused, with
    the file to rename. One named like a module nothing imports at run time (``test``)
    is only a note, returned."""
    tops: dict[str, str] = {}
    for f in files:
        name = module_name(f.rel, roots) if f.is_source else None
        if name is not None:
            tops.setdefault(name.split(".")[0], f.rel)
    clashes = sorted(n for n in tops if n in sys.stdlib_module_names or n == "test")
    harmful = [n for n in clashes if n not in _HARMLESS]
    if harmful:
        shown = ", ".join(f"{tops[n]} (`{n}`)" for n in harmful)
        raise BuildError(f"the app's {shown} shadow{'s' if len(harmful) == 1 else ''} the "
                         "standard-library module of the same name: every import of it, "
                         "Python's own included, would get the app's",
                         hint=f"rename {tops[harmful[0]]} (and its imports) to a name that "
                         "is not a standard-library module, e.g. "
                         f"{harmful[0]}_{'app' if harmful[0] != 'app' else 'main'}")
    return [f"{tops[n]} has the name of the standard library's `{n}` (which a served app "
            "does not use); renaming it avoids surprises" for n in clashes]
