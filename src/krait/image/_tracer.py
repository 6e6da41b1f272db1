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

# Loaded before the app, this file's imports are in the start-up set and the heap the trace
# reports: no typing, and no `from __future__` (that imports a module too). Annotations other
# than plain names are strings (Python 3.8 evaluates the rest); ModuleType is for mypy only
# (mypy takes this block as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType


def _mapped_objects() -> "list[str]":
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


def _import_tree(package: str) -> None:
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


def _resident_kib() -> "tuple[int, int]":
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


def _load_scan() -> "ModuleType":
    """The source reader (_scan.py beside this file), loaded only now: its code is not the
    app's and must not be in the heap measured above. Its own imports (ast) neither."""
    import ast  # noqa: F401
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_krait_scan", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_scan.py"))
    assert spec is not None and spec.loader is not None  # a .py file: it has both
    module = importlib.util.module_from_spec(spec)
    sys.modules["_krait_scan"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
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
        def find_spec(name: str, path: object = None, target: object = None) -> None:
            absent.add(name)  # every import attempt; the finders after us do the work

    sys.meta_path.insert(0, _Absent)
    # As in the guest: the app's folders first, then krait's runtime; the libraries the
    # runtime brings for its own server (wsproto) last, so that the app's own copies win.
    sys.path[:0] = [*request.get("app_paths", [request["app_root"]]), request["runtime_path"]]
    if request.get("runtime_lib"):
        sys.path.append(os.path.join(request["runtime_path"], "lib"))
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
    if failed is None and request.get("callable"):
        entry = sys.modules[request["entry_module"]]
        if not callable(getattr(entry, request["callable"], None)):
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
    scan = _load_scan()
    if failed is None:
        before = set(sys.modules)
        failed = scan.check_dynamic_imports(os.path.abspath(request["app_root"]))
        traced |= set(sys.modules) - before  # what the app's literal import_module() named
    stdlib_dir = os.path.realpath(sysconfig.get_paths()["stdlib"])
    static, static_packages, static_via = {}, {}, {}
    used = {}
    if not failed:
        scan.load_scan_cache(request.get("scan_cache"))
        skip = [p for x in request.get("exclude", []) for p in (x, "_" + x)]
        roots = scan.declared_top_levels() if request.get("declared_roots") else ()
        args = (skip, set(startup), stdlib_dir, roots)
        static, static_packages, static_via = scan.static_closure(traced, *args)
        app_root = os.path.abspath(request["app_root"])
        third_party = [n for n, o in static.items()
                       if not o.startswith((stdlib_dir + os.sep, app_root + os.sep,
                                            os.path.abspath(request["runtime_path"])))]
        if third_party:
            before = set(sys.modules)
            scan.import_quietly(sorted(third_party))
            traced |= set(sys.modules) - before - {"__main__", "__mp_main__"}
        # The distributions the app uses go in whole (frameworks import their own parts
        # by name); what any of their modules, or any module of the app, may import from
        # the standard library is found by reading them all.
        # (What site and .pth hooks of the build environment loaded is not the app's.)
        origins = {o for o in (scan.module_origin(sys.modules[n]) for n in traced
                               if n in sys.modules and n not in startup) if o}
        origins |= set(static.values())
        used = scan.distributions_used(
            origins, [stdlib_dir, app_root, os.path.abspath(request["runtime_path"])],
            everything=bool(request.get("declared_roots")))
        sources = [(n, path) for n, path in request.get("app_sources", [])]
        for d in used.values():
            for path in d["files"]:
                name = scan.module_name(os.path.relpath(path, d["root"]))
                if name:
                    sources.append((name, path))
        # The codecs come along whole (below), so what they import must too: the idna
        # codec, which socket.getaddrinfo() uses for every host name given as str,
        # imports stringprep ("unknown encoding: idna" without it).
        sources += [(n, path) for n, path in scan.encodings().items() if n not in traced]
        static, static_packages, static_via = scan.static_closure(traced, *args, sources)
        scan.save_scan_cache(request.get("scan_cache"))
    if not failed:
        # site: a child started as sys.executable (subprocess, multiprocessing's spawn)
        # imports it at start-up, unlike the guest's own -S interpreter.
        for name in ("site", "_sitebuiltins"):
            module = sys.modules.get(name)
            if module is not None and scan.module_origin(module):
                static.setdefault(name, scan.module_origin(module))
        for name, origin in scan.encodings().items():
            if name not in traced:
                static.setdefault(name, origin)
    modules = {}
    packages = {}
    for name in sorted(traced):
        module = sys.modules.get(name)
        if module is None:
            continue
        origin = scan.module_origin(module)
        if origin:
            modules[name] = origin
        path = getattr(module, "__path__", None)
        if path is not None:
            packages[name] = [os.path.abspath(p) for p in path if os.path.isdir(p)]
    for name, path in static_packages.items():
        if name in static:
            packages.setdefault(name, [os.path.abspath(p) for p in path if os.path.isdir(p)])
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
        "distributions": used,
        "startup": startup,
        "absent": sorted(n for n in absent
                         if "." in n and n not in traced and n not in static),
        "static": static,
        "static_via": static_via,
        "heap_kib": heap_kib,
        "mapped_kib": mapped_kib,
        # Where zoneinfo looks for the time-zone database (before the tzdata package).
        "tzpath": [p for p in (sysconfig.get_config_var("TZPATH") or "").split(os.pathsep)
                   if os.path.isabs(p)],
    }
    json.dump(report, report_out)
    report_out.flush()


if __name__ == "__main__":
    main()
