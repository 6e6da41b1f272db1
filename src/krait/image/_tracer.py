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


def _literal_dynamic_imports(path):
    """(line, name) for importlib.import_module("x") and __import__("x") in a source file."""
    import ast

    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
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
    modules = {}
    packages = {}
    for name, module in sorted(sys.modules.items()):
        origin = _origin(module)
        if origin:
            modules[name] = origin
        path = getattr(module, "__path__", None)
        if path is not None:
            packages[name] = [os.path.abspath(p) for p in path if os.path.isdir(p)]
    top_levels = sorted({n.split(".")[0] for n in modules})
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
        "absent": sorted(n for n in absent if "." in n and n not in sys.modules),
    }
    json.dump(report, report_out)
    report_out.flush()


if __name__ == "__main__":
    main()
