"""Run by the *app's* interpreter at build time: import the app, report what it used.

Standard library only (it runs in the app's environment, not krait's). Reads a JSON
request on stdin, prints a JSON report on stdout. Imports the app's entry module,
the modules the app lists as dynamic imports, and the guest runtime modules for
the app's kind, then records every module in ``sys.modules`` with its file and
every shared object mapped into the process.
"""

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import sysconfig
import traceback


def _origin(module):
    # Frozen stdlib modules have origin "frozen" but a real __file__.
    spec = getattr(module, "__spec__", None)
    for origin in (getattr(spec, "origin", None), getattr(module, "__file__", None)):
        if isinstance(origin, str) and os.path.isfile(origin):
            return os.path.abspath(origin)
    return None


def _mapped_objects():
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
                    path = parts[5].strip()
                    if os.path.isfile(path):
                        found.add(path)
    except OSError:
        pass
    return sorted(found)


def _distributions(top_levels):
    """Top-level name -> the *.dist-info folders of the distributions providing it."""
    try:
        import importlib.metadata as md

        owners = md.packages_distributions()
    except Exception:
        return []
    found = {}
    for top in top_levels:
        for dist_name in owners.get(top, []):
            try:
                dist = md.distribution(dist_name)
            except Exception:
                continue
            path = getattr(dist, "_path", None)
            if path is not None and os.path.isdir(path):
                found.setdefault(top, []).append(os.path.abspath(str(path)))
    return found


def _import_tree(package):
    """Import ``package`` and every submodule that imports here; skip the ones that do
    not (optional back-ends, test plugins): the guest cannot import them either."""
    import pkgutil

    try:
        root = importlib.import_module(package)
    except Exception:
        return
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=package + ".",
                                      onerror=lambda _: None):
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)


def parse_python(source, filename="<unknown>", mode="exec"):
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


def _literal_dynamic_imports(path):
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


def _check_dynamic_imports(app_root):
    """Import what the app's own code names in import_module("x") calls, so the trace sees
    it even when the call had not run yet; a failure names the file, line and module."""
    venvs = tuple(os.path.join(app_root, v) + os.sep for v in (".venv", "venv"))
    own = [m for m in list(sys.modules.values())
           if (_origin(m) or "").startswith(app_root + os.sep)
           and not _origin(m).startswith(venvs) and _origin(m).endswith(".py")]
    for module in own:
        for line, name in _literal_dynamic_imports(_origin(module)):
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except BaseException as e:
                where = os.path.relpath(_origin(module), app_root)
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


def _is_type_checking(test):
    import ast

    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


_IMPORT_SYSTEM = ("importlib._bootstrap", "_frozen_importlib", "zipimport")
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def _catches_import_error(handler):
    import ast

    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(n, "id", getattr(n, "attr", None)) in _IMPORT_ERRORS for n in names)


def _is_main_block(test):
    import ast

    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _walk_outside_functions(node):
    """ast.walk, without going into the functions and classes defined under ``node``."""
    import ast

    todo = [node]
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)))


def _literal_prefix(node):
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


def _imports_in(path, name, is_package, command_line_tools=False):
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

    def absolute(module, level):
        if not level:
            return module
        base = package.split(".") if package else []
        if level - 1 > len(base):
            return None
        base = base[:len(base) - (level - 1)]
        return ".".join([*base, module] if module else base) or None

    def walk(nodes, lazy, instead_of, out):
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
                primary = []
                walk(node.body, lazy, instead_of, primary)
                fallbacks = []
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

    found = []
    walk([tree], False, (), found)
    _SCANNED[key] = found
    return found


# What each source file imports, kept between builds (krait passes the file; a file's
# entry is keyed by its path, size and mtime).
_SCANNED: dict = {}
_LOADED: set = set()


def _load_scan_cache(path):
    if not path:
        return
    with contextlib.suppress(OSError, ValueError), open(path) as f:
        _SCANNED.update(json.load(f))
    _LOADED.update(_SCANNED)


def _save_scan_cache(path):
    """Keep the entries whose file is still as it was (an edited file gets a new one)."""
    if not path:
        return

    def current(key):
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


def _static_closure(traced, skip_prefixes, startup, stdlib, roots=()):
    """Modules the traced ones import later (in functions, on first use) that are on this
    interpreter's path: found without importing them, as modulefinder does; ``roots`` are
    more top-level modules to start from as if imported. Returns (name -> file, package
    name -> its folders, name -> who imports it)."""
    import pkgutil
    from importlib.machinery import PathFinder

    found, missing, locations, via = {}, set(), {}, {}

    def search_path(parent):
        module = sys.modules.get(parent) if parent in traced else None
        if module is not None:
            return list(getattr(module, "__path__", None) or [])
        return locations.get(parent)

    def lookup(candidate):
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
        except (ImportError, ValueError, OSError):
            spec = None
        if spec is None:
            missing.add(candidate)
            return False
        if spec.submodule_search_locations is not None:
            locations[candidate] = list(spec.submodule_search_locations)
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
    queue = [(n, _origin(m), hasattr(m, "__path__"), True)
             for n, m in [(n, sys.modules[n]) for n in sorted(traced) if n in sys.modules]
             if (n not in startup or (_origin(m) or "").startswith(stdlib + os.sep))
             and not any(n == p or n.startswith(p + ".") for p in skip_prefixes)]

    for root in roots:
        if lookup(root):
            via[root] = "(declared)"
            queue.append((root, found.get(root), root in locations, False))

    def available(candidate):
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


def _import_quietly(names):
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


def _declared_top_levels():
    """The top-level modules in this environment's site-packages: when krait made the
    environment, exactly the app's locked dependencies. One the app never imports at
    build time may still be used (tzdata, read through importlib.resources). Read from
    the folder itself: importlib.metadata would import a dozen modules into the trace."""
    names = set()
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


def _encodings():
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


def _resident_kib():
    """(anonymous, file-backed) memory resident once the app is imported: the guest's
    heap, and the interpreter and library pages it keeps mapped, roughly."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    found[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return found.get("RssAnon", 0), found.get("RssFile", 0)


def main():
    request = json.load(sys.stdin)
    # The app may print while it is imported; keep our report apart from that.
    report_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # What the interpreter (and site, .pth hooks) loaded before the app: the guest
    # runs without site, so only the standard library part of this matters.
    startup = sorted(sys.modules)
    # Names imported and not there at the end (optional imports that failed): the guest's
    # hint about modules the trace missed stays quiet about these.
    absent = set()

    class _Absent:
        @staticmethod
        def find_spec(name, path=None, target=None):
            absent.add(name)  # every import attempt; the finders after us do the work

    sys.meta_path.insert(0, _Absent)
    sys.path[:0] = [request["app_root"], request["runtime_path"]]
    os.chdir(request["app_root"])
    failed = None
    for name in request["runtime_modules"] + request["modules"] + [request["entry_module"]]:
        if name.endswith(".*"):
            # A whole package: for code that picks its submodules at run time.
            _import_tree(name[:-2])
            continue
        try:
            importlib.import_module(name)
        except BaseException as e:  # SystemExit from an app that runs at import, too
            failed = {
                "module": name,
                "error": f"{type(e).__name__}: {e}",
                "missing": e.name if isinstance(e, ModuleNotFoundError) else None,
                "traceback": traceback.format_exc(),
            }
            break
    if failed is None:
        failed = _check_dynamic_imports(os.path.abspath(request["app_root"]))
    if failed is None and request.get("callable"):
        module = sys.modules[request["entry_module"]]
        if not callable(getattr(module, request["callable"], None)):
            failed = {"module": request["entry_module"], "missing": None, "traceback": "",
                      "error": f"{request['entry_module']} has no callable "
                               f"`{request['callable']}`"}
    if failed is None and request.get("server", "builtin") != "builtin":
        # The server imports its protocol and loop classes by name when it starts.
        try:
            from krait.guest import servers

            target = getattr(sys.modules[request["entry_module"]], request["callable"])
            servers.preload(request["server"], target)
        except BaseException as e:
            failed = {
                "module": request["server"],
                "error": f"{type(e).__name__}: {e}",
                "missing": e.name if isinstance(e, ModuleNotFoundError) else None,
                "traceback": traceback.format_exc(),
            }
    heap_kib, mapped_kib = _resident_kib()
    # What the app (and its runtime) imported. From here on the tracer imports modules of
    # its own (ast, pkgutil, importlib.metadata): they are not the app's.
    traced = set(sys.modules) - {"__main__", "__mp_main__"}
    stdlib_dir = os.path.realpath(sysconfig.get_paths()["stdlib"])
    static, static_packages, static_via = {}, {}, {}
    if not failed:
        _load_scan_cache(request.get("scan_cache"))
        skip = [p for x in request.get("exclude", []) for p in (x, "_" + x)]
        roots = _declared_top_levels() if request.get("declared_roots") else ()
        args = (skip, set(startup), stdlib_dir, roots)
        static, static_packages, static_via = _static_closure(traced, *args)
        app_root = os.path.abspath(request["app_root"])
        third_party = [n for n, o in static.items()
                       if not o.startswith((stdlib_dir + os.sep, app_root + os.sep,
                                            os.path.abspath(request["runtime_path"])))]
        if third_party:
            before = set(sys.modules)
            _import_quietly(sorted(third_party))
            traced |= set(sys.modules) - before - {"__main__", "__mp_main__"}
            static, static_packages, static_via = _static_closure(traced, *args)
        _save_scan_cache(request.get("scan_cache"))
    if not failed:
        # site: a child started as sys.executable (subprocess, multiprocessing's spawn)
        # imports it at start-up, unlike the guest's own -S interpreter.
        for name in ("site", "_sitebuiltins"):
            module = sys.modules.get(name)
            if module is not None and _origin(module):
                static.setdefault(name, _origin(module))
        for name, origin in _encodings().items():
            if name not in traced:
                static.setdefault(name, origin)
    modules = {}
    packages = {}
    for name in sorted(traced):
        module = sys.modules.get(name)
        if module is None:
            continue
        origin = _origin(module)
        if origin:
            modules[name] = origin
        path = getattr(module, "__path__", None)
        if path is not None:
            packages[name] = [os.path.abspath(p) for p in path if os.path.isdir(p)]
    for name, path in static_packages.items():
        if name in static:
            packages.setdefault(name, [os.path.abspath(p) for p in path if os.path.isdir(p)])
    top_levels = sorted({n.split(".")[0] for n in [*modules, *static]})
    report = {
        "failed": failed,
        "executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "version": list(sys.version_info[:3]),
        "magic": importlib.util.MAGIC_NUMBER.hex(),
        "stdlib": os.path.realpath(sysconfig.get_paths()["stdlib"]),
        "platstdlib": os.path.realpath(sysconfig.get_paths()["platstdlib"]),
        # DESTSHARED is the base interpreter's lib-dynload, also from inside a venv.
        "dynload": os.path.realpath(sysconfig.get_config_var("DESTSHARED")
                                    or os.path.join(sysconfig.get_paths()["stdlib"],
                                                    "lib-dynload")),
        "prefix": sys.base_prefix,
        "path": [os.path.abspath(p) for p in sys.path if p],
        "modules": modules,
        "packages": packages,
        "builtins": sorted(sys.builtin_module_names),
        "shared_objects": _mapped_objects(),
        "distributions": _distributions(top_levels),
        "startup": startup,
        "absent": sorted(n for n in absent
                         if "." in n and n not in traced and n not in static),
        "static": static,
        "static_via": static_via,
        "heap_kib": heap_kib,
        "mapped_kib": mapped_kib,
    }
    json.dump(report, report_out)
    report_out.flush()


if __name__ == "__main__":
    main()
