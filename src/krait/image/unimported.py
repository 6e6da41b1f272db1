"""Files a package uses without importing them: the data beside its modules, and the
helper scripts it runs as files (``[sys.executable, path_to("helper.py")]``).

A trace sees modules, never these; the closure (krait.image.closure) adds them for the
standard library's packages, as every third-party distribution comes whole anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath


def package_data(folder: Path) -> list[Path]:
    """The files of a package that are neither its modules nor its subpackages': those
    in its folder that are not Python, and everything in its folders that are not
    packages themselves (scripts too: ``test/subprocessdata/fd_status.py`` is run as a
    file, never imported)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                             and not (here / d / "__init__.py").exists())
        data = here != folder  # a folder below the package that is not a package
        found += [here / fn for fn in sorted(filenames)
                  if data or not fn.endswith((".py", ".pyc", ".so"))]
    return found


# A file name in quotes that ends in .py, passed or assigned (not a word in prose):
# findfile("fd_status.py"), os.path.join(here, 'tf_inherit_check.py'), name = "x.py".
_SCRIPT_NAME = re.compile(rb"""[(,=\[]\s*["']([A-Za-z0-9_.-]+\.py)["']""")
# Named in quotes by code that walks packages, never run as scripts of their own.
_PACKAGE_FILES = frozenset({"__init__.py", "__main__.py", "setup.py"})


def scripts_named(compiled: Iterable[tuple[str, str, Path]]) -> list[tuple[str, str, Path]]:
    """Helper scripts the modules of ``compiled`` (layer, guest path of the ``.pyc``,
    host source) run as files: a ``.py`` file that a module's source names in quotes,
    beside it or in a folder below it that is not a package, goes in as its source too
    (a path to ``helper.py`` must lead to ``helper.py``), as (layer, guest path, host
    path). Not a module the standard library or a package imports (its source beside
    its bytecode would be compiled at each import instead): in the app's own folder,
    where every file is the app's, it goes in all the same."""
    compiled = list(compiled)
    modules = {guest for layer, guest, _ in compiled if layer != "app"}
    out = []
    for layer, pyc, host in compiled:
        if host.suffix != ".py":
            continue
        try:
            source = host.read_bytes()
        except OSError:
            continue
        if b".py'" not in source and b'.py"' not in source:
            continue  # most modules: no need for the expression
        folder, guest = host.parent, PurePosixPath(pyc).parent
        for name in {m.decode() for m in _SCRIPT_NAME.findall(source)} - _PACKAGE_FILES:
            below = [p / name for p in folder.iterdir()
                     if p.is_dir() and not (p / "__init__.py").exists()]
            for found in [folder / name, *below]:
                rel = found.relative_to(folder).as_posix()
                if found.is_file() and str(guest / rel)[:-3] + ".pyc" not in modules:
                    out.append((layer, str(guest / rel), found))
    return out
