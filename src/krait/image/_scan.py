"""Run by the *app's* interpreter at build time, after the app was imported and measured
(see _tracer): what its sources import, read without running them, and the
distributions it uses.

Standard library only. Kept apart from the tracer so that its code is not part of the
heap the tracer measures once the app is imported.
"""

from __future__ import annotations  # annotations stay text: this runs on Python 3.8+

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import sysconfig

# Names for annotations only, not imported when this runs: a module imported here would be
# in sys.modules already when the app's modules imported later (import_quietly) import it,
# and so missing from the trace. mypy takes the block as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from collections.abc import Collection, Iterable, Iterator, Sequence
    from importlib.metadata import Distribution
    from typing import Any, TypedDict

    # (module name, lazy, instead_of, certain, optional): see _imports_in.
    _Import = tuple[str, bool, tuple[str, ...], bool, bool]

    class _Installed(TypedDict):
        """A distribution as _installed finds it."""

        root: str
        metadata: str
        files: list[str]
        requires: list[str]


def module_origin(module: object) -> str | None:
    # Frozen stdlib modules have origin "frozen" but a real __file__.
    spec = getattr(module, "__spec__", None)
    for origin in (getattr(spec, "origin", None), getattr(module, "__file__", None)):
        if isinstance(origin, str) and os.path.isfile(origin):
            return os.path.abspath(origin)
    return None


def parse_python(source: str | bytes, filename: str = "<unknown>", mode: str = "exec"
                 ) -> ast.AST:
    """ast.parse, retried when CPython 3.11 before 3.11.8 (Debian 12 has 3.11.2) raises
    its spurious "AST constructor recursion depth mismatch" SystemError (python/cpython
    gh-106905); the same source parses on the next try. Calls compile() as ast.parse
    does, so the tests can install it as ast.parse for pytest's own parsing."""
    import ast

    for attempt in range(3):
        try:
            return compile(source, filename, mode, ast.PyCF_ONLY_AST, dont_inherit=True)
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _literal_dynamic_imports(path: str) -> list[tuple[int, str]]:
    """(line, name) for importlib.import_module("x") and __import__("x") in a source file."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = parse_python(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return []
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in ("import_module", "__import__") and not node.args[0].value.startswith("."):
            found.append((node.lineno, node.args[0].value))
    return found


def check_dynamic_imports(app_root: str) -> dict[str, str | None] | None:
    """Import what the app's own code names in import_module("x") calls, so the trace sees
    it even when the call had not run yet; a failure names the file, line and module."""
    venvs = tuple(os.path.join(app_root, v) + os.sep for v in (".venv", "venv"))
    origins = [module_origin(m) for m in list(sys.modules.values())]
    own = [o for o in origins if o and o.startswith(app_root + os.sep)
           and not o.startswith(venvs) and o.endswith(".py")]
    for origin in own:
        for line, name in _literal_dynamic_imports(origin):
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except BaseException as e:
                where = os.path.relpath(origin, app_root)
                return {
                    "module": name,
                    "error": f"{where}:{line} imports `{name}` dynamically, and it cannot "
                             f"be imported at build time: {type(e).__name__}: {e}",
                    "missing": name if isinstance(e, ModuleNotFoundError) else None,
                    "traceback": "",
                }
    return None


# Statically found imports of these are left out: tools for developing and testing,
# which a program serving requests does not start (the trace still keeps any of them
# the app really imports).
_NOT_STATIC = frozenset({
    "test", "tests", "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "lib2to3",
    "ensurepip", "venv", "distutils", "pydoc", "pydoc_data", "doctest", "pdb", "unittest",
    "setuptools", "pkg_resources", "pip", "_pytest", "pytest", "IPython", "readline",
    "rlcompleter", "curses", "_curses", "_curses_panel", "sitecustomize", "usercustomize",
})


def _is_type_checking(test: ast.expr) -> bool:
    import ast

    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


_IMPORT_SYSTEM = ("importlib._bootstrap", "_frozen_importlib", "zipimport")
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    import ast

    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(n, "id", getattr(n, "attr", None)) in _IMPORT_ERRORS for n in names)


def _is_main_block(test: ast.expr) -> bool:
    import ast

    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _walk_outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, without going into the functions and classes defined under ``node``."""
    import ast

    todo = [node]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)))


def _literal_prefix(node: ast.expr) -> str | None:
    """The string, or the literal start of an f-string or of "x." + name; else None."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0],
                                                                      ast.Constant):
        return str(node.values[0].value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_prefix(node.left)
    return None


def _imports_in(path: str, name: str, is_package: bool, command_line_tools: bool = False
                ) -> list[_Import]:
    """(module name, lazy, instead_of, certain, optional) for every import in the source
    file that could load a module: statements (``lazy`` when inside a function) and
    importlib.import_module / __import__ calls. ``instead_of`` names the imports an
    ``except ImportError`` fallback stands in for (needed only if one of them is not
    there); ``certain`` is False for the y of ``from x import y`` (maybe a submodule,
    maybe a name in x); ``optional`` when a failed import is simply tolerated. Left out:
    what only type checkers see (``if TYPE_CHECKING:``) and a module's command-line tool
    (``if __name__ == "__main__":``, and with ``command_line_tools`` its
    ``main``/``_main``/``_test`` functions: the standard library's way)."""
    import ast

    try:
        st = os.stat(path)
        key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{name}\0{is_package}\0{command_line_tools}"
    except OSError:
        return []
    if key in _SCANNED:
        return [(n, lazy, tuple(inst), certain, optional)
                for n, lazy, inst, certain, optional in _SCANNED[key]]
    try:
        with open(path, "rb") as f:
            source = f.read()
        tree = parse_python(source, path)
    except (OSError, SyntaxError, ValueError):
        return []
    package = name if is_package else name.rpartition(".")[0]
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    tools = ("main", "_main", "_test") if command_line_tools else ()
    # Import statements sit in statements; only a file that names import_module or
    # __import__ needs its expressions walked as well (most of the cost).
    calls = b"import_module" in source or b"__import__" in source
    descend = ast.AST if calls else (ast.stmt, ast.excepthandler, ast.match_case)

    def absolute(module: str | None, level: int) -> str | None:
        if not level:
            return module
        base = package.split(".") if package else []
        if level - 1 > len(base):
            return None
        base = base[:len(base) - (level - 1)]
        return ".".join([*base, module] if module else base) or None

    def walk(nodes: Iterable[ast.AST], lazy: bool, instead_of: tuple[str, ...],
             out: list[_Import]) -> None:
        todo = [(n, lazy) for n in nodes]
        while todo:
            node, lazy = todo.pop()
            if isinstance(node, ast.If) and (_is_type_checking(node.test)
                                             or _is_main_block(node.test)):
                todo.extend((n, lazy) for n in node.orelse)
                continue
            if isinstance(node, functions[:2]) and node.name in tools:
                continue
            if isinstance(node, ast.Try) and any(_catches_import_error(h)
                                                 for h in node.handlers):
                primary: list[_Import] = []
                walk(node.body, lazy, instead_of, primary)
                fallbacks: list[_Import] = []
                for handler in node.handlers:
                    if _catches_import_error(handler):
                        firsts = tuple(p[0] for p in primary if p[3])
                        walk(handler.body, lazy, firsts, fallbacks)
                    else:
                        walk(handler.body, lazy, instead_of, out)
                handled = [h for h in node.handlers if _catches_import_error(h)]
                raises = any(isinstance(n, ast.Raise) for h in handled
                             for n in _walk_outside_functions(h))
                bound = {(a.asname or a.name).partition(".")[0] for n in node.body
                         if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
                stand_ins = {t.id for h in handled for n in ast.walk(h)
                             if isinstance(n, ast.Assign) for t in n.targets
                             if isinstance(t, ast.Name)}
                stand_ins |= {n.name for h in handled for n in ast.walk(h)
                              if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
                copes = bool(bound & stand_ins)
                # Nothing instead, or the name given a stand-in (hmac's "_hashopenssl =
                # None", hashlib's own pbkdf2_hmac); and no error, or only for the one
                # function (tarfile's "bz2 module is not available"): the module works
                # without it. Marked so a module that never ran leaves it out.
                optional = (not fallbacks or copes) and (not raises or lazy)
                out.extend((n, lazy, inst, certain, optional) for n, lazy, inst, certain, _
                           in primary)
                out.extend(fallbacks)
                walk([*node.orelse, *node.finalbody], lazy, instead_of, out)
                continue
            if isinstance(node, ast.Import):
                out.extend((alias.name, lazy, instead_of, True, False) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = absolute(node.module, node.level)
                if base:
                    out.append((base, lazy, instead_of, True, False))
                    # "from x import y": y may be a submodule, or just a name in x.
                    out.extend((f"{base}.{a.name}", lazy, instead_of, False, False)
                               for a in node.names if a.name != "*")
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                called = (func.attr if isinstance(func, ast.Attribute)
                          else getattr(func, "id", None))
                target = _literal_prefix(node.args[0]) if called in (
                    "import_module", "__import__") else None
                if target is not None:
                    # A name built at run time, f"anyio._backends._{name}": every module
                    # its literal beginning can lead to ("anyio._backends._*").
                    whole = isinstance(node.args[0], ast.Constant)
                    level = len(target) - len(target.lstrip("."))
                    resolved = absolute(target[level:], level) if level else target
                    if resolved and (whole or "." in resolved):
                        out.append((resolved if whole else resolved + "*", lazy, instead_of,
                                    True, False))
            inner = lazy or isinstance(node, functions)
            todo.extend((child, inner) for child in ast.iter_child_nodes(node)
                        if isinstance(child, descend))

    found: list[_Import] = []
    walk([tree], False, (), found)
    _SCANNED[key] = found
    return found


# What each source file imports, kept between builds (krait passes the file; a file's
# entry is keyed by its path, size and mtime).
# The entries read back from the file hold lists where _imports_in made tuples.
_SCANNED: dict[str, Sequence[Sequence[Any]]] = {}
_LOADED: set[str] = set()


def load_scan_cache(path: str | None) -> None:
    if not path:
        return
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        _SCANNED.update(json.load(f))
    _LOADED.update(_SCANNED)


def save_scan_cache(path: str | None) -> None:
    """Keep the entries whose file is still as it was (an edited file gets a new one)."""
    if not path:
        return

    def current(key: str) -> bool:
        file, size, mtime = key.split("\0")[:3]
        try:
            st = os.stat(file)
        except OSError:
            return False
        return str(st.st_size) == size and str(st.st_mtime_ns) == mtime

    if _SCANNED.keys() == _LOADED:
        return  # nothing new
    kept = {k: v for k, v in _SCANNED.items() if current(k)}
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            f.write(json.dumps(kept))  # dumps: the C encoder (dump() is pure Python)
        os.replace(tmp, path)


def static_closure(traced: Collection[str], skip_prefixes: Sequence[str],
                   startup: Collection[str], stdlib: str, roots: Iterable[str] = (),
                   sources: Iterable[tuple[str, str]] = ()
                   ) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Modules the traced ones import later (in functions, on first use) that are on this
    interpreter's path: found without importing them, as modulefinder does; ``roots`` are
    more top-level modules to start from as if imported, ``sources`` (name, file) more
    modules to read though they never ran. Returns (name -> file, package name -> its
    folders, name -> who imports it)."""
    import pkgutil
    from importlib.machinery import PathFinder

    found: dict[str, str] = {}
    missing: set[str] = set()
    locations: dict[str, list[str]] = {}
    via: dict[str, str] = {}

    def search_path(parent: str) -> list[str] | None:
        module = sys.modules.get(parent) if parent in traced else None
        if module is not None:
            return list(getattr(module, "__path__", None) or [])
        return locations.get(parent)

    def lookup(candidate: str) -> bool:
        if candidate in traced or candidate in found or candidate in missing:
            return False
        top, _, rest = candidate.partition(".")
        if top in _NOT_STATIC or any(p in ("tests", "test", "conftest")
                                     for p in rest.split(".")):
            return False
        if any(candidate == p or candidate.startswith(p + ".") for p in skip_prefixes):
            return False
        if candidate in sys.builtin_module_names:
            return False
        parent = candidate.rpartition(".")[0]
        path = search_path(parent) if parent else None
        if parent and not path:
            missing.add(candidate)
            return False
        try:
            spec = PathFinder.find_spec(candidate, path)
            # A namespace package's path is recomputed from its parent's module, which
            # a package that never ran does not have (KeyError).
            inside = (None if spec is None or spec.submodule_search_locations is None
                      else list(spec.submodule_search_locations))
        except (ImportError, ValueError, OSError, KeyError):
            spec = None
        if spec is None:
            missing.add(candidate)
            return False
        if inside is not None:
            locations[candidate] = inside
        if spec.origin and os.path.isfile(spec.origin):
            found[candidate] = os.path.abspath(spec.origin)
            return True
        return spec.submodule_search_locations is not None  # a namespace package

    # Every import of every module counts: a traced module's top level may take another
    # branch in the guest (anyio imports eagerly when it cannot read its own sources), and
    # any function may import later. But a fallback (``except ImportError:``) counts only
    # when its first choice is not there, and what a module that never ran can do without
    # (an accelerator, an optional format) is left out.
    # What site and .pth hooks of the build environment loaded is not the app's.
    # (name, file, is a package, ran)
    queue: list[tuple[str, str | None, bool, bool]] = [
        (n, module_origin(m), hasattr(m, "__path__"), True)
        for n, m in [(n, sys.modules[n]) for n in sorted(traced) if n in sys.modules]
        if (n not in startup or (module_origin(m) or "").startswith(stdlib + os.sep))
        and not any(n == p or n.startswith(p + ".") for p in skip_prefixes)]

    for root in roots:
        if lookup(root):
            via[root] = "(declared)"
            queue.append((root, found.get(root), root in locations, False))
    queue += [(name, path, path.endswith(os.sep + "__init__.py"), False)
              for name, path in sources if name not in traced]

    def available(candidate: str) -> bool:
        return candidate in traced or candidate in found or candidate in locations or \
            candidate in sys.builtin_module_names

    while queue:
        name, origin, is_package, ran = queue.pop()
        if not origin or not origin.endswith(".py"):
            continue
        in_stdlib = origin.startswith(stdlib + os.sep)
        for target, _lazy, instead_of, _, optional in _imports_in(origin, name, is_package,
                                                                  in_stdlib):
            if target.startswith("importlib.metadata") and name.startswith(_IMPORT_SYSTEM):
                continue  # only for importlib.metadata's callers, who import it themselves
            if not ran and optional:
                continue
            # The first choices come first in the list: by now they are in, or were
            # left out (missing, or optional in a module that never ran).
            if instead_of and all(available(p) for p in instead_of):
                continue  # the first choice is there: the fallback will not run
            if target.endswith("*"):
                package, _, start = target[:-1].rpartition(".")
                if package == "encodings":
                    continue  # the codec search: see _encodings()
                if lookup(package):
                    via[package] = name
                targets = [package] if available(package) else []
                for info in pkgutil.iter_modules(search_path(package) or []):
                    if info.name.startswith(start):
                        targets.append(f"{package}.{info.name}")
            else:
                targets = [target]
            for each in targets:
                parts = each.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if lookup(candidate):
                        via[candidate] = name
                        queue.append((candidate, found.get(candidate), candidate in locations,
                                      False))
    return found, locations, via


def import_quietly(names: Iterable[str]) -> None:
    """Import modules found by reading sources, to see what *they* import: a compiled
    module's imports (numpy.random's Cython parts import secrets) cannot be read."""
    import io

    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        for name in names:
            with contextlib.suppress(BaseException):
                importlib.import_module(name)
    finally:
        sys.stdout, sys.stderr = saved


def declared_top_levels() -> list[str]:
    """The top-level modules in this environment's site-packages: when krait made the
    environment, exactly the app's locked dependencies. One the app never imports at
    build time may still be used (tzdata, read through importlib.resources). Read from
    the folder itself: importlib.metadata would import a dozen modules into the trace."""
    names: set[str] = set()
    for key in ("purelib", "platlib"):
        folder = sysconfig.get_paths()[key]
        with contextlib.suppress(OSError):
            for entry in os.listdir(folder):
                stem = entry.partition(".")[0]
                path = os.path.join(folder, entry)
                if entry.startswith("_") or not stem.isidentifier():
                    continue
                if os.path.isdir(path) and "." not in entry:
                    names.add(entry)
                elif entry.endswith((".py", ".so")) and os.path.isfile(path):
                    names.add(stem)
    return sorted(names)


def encodings() -> dict[str, str]:
    """The codecs Python finds by name at run time ("cp1252", "utf-16", ...): every
    pure-Python one of the standard library's encodings package."""
    import encodings
    import pkgutil

    names = []
    for info in pkgutil.iter_modules(encodings.__path__, "encodings."):
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py"):
            with open(origin, "rb") as f:
                if b"_multibytecodec" in f.read():  # the CJK codecs: 2 MB of tables
                    continue
            names.append((info.name, os.path.abspath(origin)))
    return dict(names)


def _normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(text: str) -> str | None:
    import re

    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    return _normalize(m.group(1)) if m else None


def _installed(entries: list[str]) -> dict[str, _Installed]:
    """Every distribution installed on the path ``entries``: name -> its sys.path entry,
    metadata folder, files (absolute, each inside the entry) and the names it requires.
    The first of a name on the path wins, as it does for imports."""
    import importlib.metadata as md

    found: dict[str, _Installed] = {}
    for dist in md.distributions(path=entries):
        try:
            name = _normalize(dist.metadata["Name"] or "")
            meta = os.path.abspath(str(getattr(dist, "_path", "")))
            base = os.path.abspath(str(dist.locate_file("")))
            listed = dist.files
            requires = dist.requires or []
        except Exception:  # a broken metadata folder: not a distribution to ship
            continue
        if not name or name in found or not os.path.isdir(meta):
            continue
        files: set[str] = set()
        for item in listed or []:
            path = os.path.normpath(os.path.join(base, str(item)))
            # RECORD may name scripts outside the entry (../../bin/x): not importable.
            if path.startswith(base + os.sep) and os.path.isfile(path) \
                    and not os.path.islink(path):
                files.add(path)
        if not listed:  # no RECORD (an old egg-info): its top-level folders and modules
            files |= _top_level_files(dist, base)
        for dirpath, _, filenames in os.walk(meta):  # the metadata itself, whole
            files.update(os.path.join(dirpath, f) for f in filenames)
        found[name] = {"root": base, "metadata": meta, "files": sorted(files),
                       "requires": sorted({r for r in map(_requirement_name, requires) if r})}
    return found


def _top_level_files(dist: Distribution, base: str) -> set[str]:
    files: set[str] = set()
    for top in (dist.read_text("top_level.txt") or "").split():
        folder = os.path.join(base, top)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            files.update(os.path.join(dirpath, f) for f in filenames)
        for suffix in (".py",):
            if os.path.isfile(folder + suffix):
                files.add(folder + suffix)
    return files


def distributions_used(origins: Iterable[str], skip_roots: list[str], everything: bool
                       ) -> dict[str, _Installed]:
    """The distributions the app uses, each whole: those that own a module the trace or
    the scan found (``origins``), or all installed ones (``everything``: krait made the
    environment from the app's lock), and what they require, transitively. Requirements
    are followed by name to what is installed: the installer already applied markers
    and extras."""
    entries = [p for p in sys.path if p and os.path.isdir(p)
               and not any(os.path.abspath(p) == r or os.path.abspath(p).startswith(r + os.sep)
                           for r in skip_roots)]
    installed = _installed(entries)
    owner = {f: name for name, d in installed.items() for f in d["files"]}
    todo = sorted(installed) if everything else sorted({owner[o] for o in origins if o in owner})
    used: dict[str, _Installed] = {}
    while todo:
        name = todo.pop()
        if name in used or name not in installed:
            continue
        used[name] = installed[name]
        todo.extend(installed[name]["requires"])
    return used


def module_name(rel: str) -> str | None:
    """The module a file of a distribution is (``pkg/sub/__init__.py`` -> pkg.sub), or
    None for a file that is not an importable module."""
    parts = rel.split(os.sep)
    stem, _, suffix = parts[-1].partition(".")
    if suffix != "py" or not all(p.isidentifier() for p in parts[:-1]):
        return None
    if stem == "__init__":
        parts = parts[:-1]
    elif stem.isidentifier():
        parts = [*parts[:-1], stem]
    else:
        return None
    return ".".join(parts) or None
