"""Tracing an app's real imports by running its own interpreter at build time."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait.config import AppConfig
from krait.errors import TraceError
from krait.image.context import AppFile, app_files, import_roots, module_name
from krait.image.lock import declared_dependencies
from krait.paths import cache_dir, krait_dir, read_bounded, write_atomically
from krait.run import run

TRACER = Path(__file__).with_name("_tracer.py")
# krait's own package: only its guest runtime goes into images (see runtime_root).
_KRAIT_PACKAGE = Path(__file__).resolve().parents[1]
# The guest runtime each kind needs inside the VM, traced like the app itself.
# The guest runtime imports some modules only when needed (a crash, --env, the last
# message before power-off); they must be in the image all the same.
_GUEST_LAZY = ["krait.guest.init", "termios", "fcntl", "traceback", "base64", "json",
               "krait.guest.missing", "krait.guest.tunnel", "krait.guest.process",
               "krait.guest.profile"]
RUNTIME_MODULES = {
    "main": _GUEST_LAZY,
    "asgi": [*_GUEST_LAZY, "krait.guest.http"],
    "wsgi": [*_GUEST_LAZY, "krait.guest.http"],
}
# Python itself needs these at start-up even when the build host never imported them.
STARTUP_MODULES = ["encodings.utf_8", "encodings.ascii", "encodings.latin_1", "os"]


@dataclass(frozen=True)
class Distribution:
    """An installed distribution the app uses, which goes into the image whole."""

    name: str
    root: Path  # the sys.path entry it is installed in
    metadata: Path  # its *.dist-info (entry points, versions)
    files: tuple[Path, ...]  # every file it installed inside ``root``
    requires: tuple[str, ...]  # the distributions it requires (installed ones are used)


@dataclass(frozen=True)
class Trace:
    """What the app's interpreter reported after importing the app."""

    executable: Path
    version: tuple[int, int, int]
    magic: str
    stdlib: Path
    dynload: Path
    path: tuple[Path, ...]
    modules: dict[str, Path]  # imported while the app was imported
    shared_objects: tuple[Path, ...]
    distributions: dict[str, Distribution]
    packages: dict[str, list[str]]
    startup: frozenset[str]
    runtime: Path  # where krait.guest came from (see runtime_root)
    absent: frozenset[str] = frozenset()  # submodules looked for at build time, not found
    # Imported later (in functions, on first use), found by reading the traced modules'
    # sources; and the codecs Python looks up by name.
    static: dict[str, Path] = field(default_factory=dict)
    heap_kib: int = 0  # anonymous memory in use once the app was imported
    mapped_kib: int = 0  # file-backed memory resident then (interpreter, libraries)
    tzpath: tuple[Path, ...] = ()  # where zoneinfo looks for time zones

    @property
    def python_name(self) -> str:
        return f"python{self.version[0]}.{self.version[1]}"


# Libraries the guest runtime uses, from krait's own environment (pure Python): wsproto
# for WebSockets, and the h11 it needs. In the guest they come last on sys.path, so an
# app that has its own copies uses those.
RUNTIME_LIBRARIES = ("wsproto", "h11")


def _runtime_sources() -> dict[str, bytes]:
    """Path inside the runtime folder -> contents."""
    sources = {f"krait/{p.relative_to(_KRAIT_PACKAGE).as_posix()}": p.read_bytes()
               for p in [_KRAIT_PACKAGE / "__init__.py",
                         *sorted((_KRAIT_PACKAGE / "guest").glob("*.py"))]}
    for name in RUNTIME_LIBRARIES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        folder = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(folder.rglob("*.py")):
            sources[f"lib/{name}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    return sources


def runtime_root() -> Path:
    """A folder holding krait's guest runtime and nothing else of krait's (a copy, keyed by
    its contents): the tracer puts it on the app's path, so an image can never pick up
    krait's own dependencies from the environment krait is installed in. What is there
    is compared with the sources each time (a few hundred KB): the folder is a cache,
    and what it holds becomes the guest's PID 1."""
    sources = _runtime_sources()
    h = hashlib.sha256()
    for rel, data in sorted(sources.items()):
        h.update(rel.encode() + b"\0" + data + b"\0")
    root = krait_dir(cache_dir(), "runtime", h.hexdigest()[:16])
    for rel, data in sources.items():
        path = krait_dir(root, *Path(rel).parent.parts) / Path(rel).name
        try:
            same = read_bounded(path, len(data) + 1) == data
        except OSError:
            same = False
        if not same:
            write_atomically(path, data)
    return root


def _scan_cache() -> Path:
    """Where the tracer keeps what each source file imports (keyed by path, size and
    mtime, so one file serves every interpreter and app)."""
    return krait_dir(cache_dir(), "objects") / "imports.json"


def runtime_modules(app: AppConfig) -> list[str]:
    """The guest runtime for the app's kind, and the server from its venv, if it names one."""
    if app.kind == "main" or app.server == "builtin":
        return RUNTIME_MODULES[app.kind]
    return [*RUNTIME_MODULES["main"], "krait.guest.servers", app.server]


def trace_app(app: AppConfig, python: Path, declared_roots: bool = False,
              files: list[AppFile] | None = None) -> Trace:
    """Import the app in a subprocess of its own interpreter and report what it used;
    ``declared_roots``: every package of the environment may be used (krait made it from
    the app's lock), so those the app did not import go in too. ``files``: the app
    folder's (see krait.image.context), all read for what they import."""
    runtime = runtime_root()
    roots = import_roots(app.root)
    if files is None:
        files = app_files(app.root, app.ignore, app.exclude)
    request = {
        "app_root": str(app.root),
        "app_paths": [str(app.root / r) for r in roots],
        "app_sources": [(name, str(f.path)) for f in files if f.is_source
                        if (name := module_name(f.rel, roots))],
        "runtime_path": str(runtime),
        "runtime_modules": [*STARTUP_MODULES, *runtime_modules(app)],
        "server": app.server if app.kind != "main" else "builtin",
        # The libraries of the runtime's lib folder serve WebSockets on krait's server.
        "runtime_lib": app.kind == "asgi" and app.server == "builtin",
        "modules": list(app.modules),
        "exclude": list(app.exclude),
        "entry_module": app.module,
        "callable": app.callable,
        "declared_roots": declared_roots,
        "scan_cache": str(_scan_cache()),
    }
    # -s -P and an environment of our own rather than -I: -I would ignore PYTHONHASHSEED,
    # and a fixed hash seed makes what the tracer measures (the heap) repeatable.
    proc = run([python, "-s", "-P", "-B", TRACER], input=json.dumps(request).encode(),
               check=False, cwd=app.root, env={"PYTHONHASHSEED": "0"})
    # The tracer's stdout carries only its report; the app's own output went to stderr.
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out = proc.stderr or ""
        raise TraceError(
            f"could not trace {app.entry} with {python} (exit status {proc.returncode}):\n"
            + "\n".join(out.strip().splitlines()[-15:]),
            hint="run the app once with that interpreter to see why it does not start",
        ) from None
    _raise_for_failure(app, report.get("failed"))
    return Trace(
        executable=Path(report["executable"]),
        version=(report["version"][0], report["version"][1], report["version"][2]),
        magic=report["magic"],
        stdlib=Path(report["stdlib"]),
        dynload=Path(report["dynload"]),
        path=tuple(Path(p) for p in report["path"]),
        modules={k: Path(v) for k, v in report["modules"].items()},
        shared_objects=tuple(Path(p) for p in report["shared_objects"]),
        distributions={name: Distribution(name, Path(d["root"]), Path(d["metadata"]),
                                          tuple(Path(f) for f in d["files"]),
                                          tuple(d["requires"]))
                       for name, d in report["distributions"].items()},
        packages=report["packages"],
        startup=frozenset(report["startup"]),
        runtime=runtime,
        absent=frozenset(report.get("absent", [])),
        static={k: Path(v) for k, v in report.get("static", {}).items()},
        heap_kib=int(report.get("heap_kib", 0)),
        mapped_kib=int(report.get("mapped_kib", 0)),
        tzpath=tuple(Path(p) for p in report.get("tzpath", [])),
    )


def _raise_for_failure(app: AppConfig, failed: dict[str, Any] | None) -> None:
    if not failed:
        return
    module, missing = failed["module"], failed.get("missing")
    tb = failed.get("traceback", "").strip()
    detail = "\n".join(tb.splitlines()[-8:]) if tb else failed["error"]
    if missing:
        top = missing.split(".")[0]
        own = (app.root / top).exists() or (app.root / f"{top}.py").exists()
        declared = declared_dependencies(app)
        if own:
            message = (f"importing `{module}` at build time failed: module `{missing}` "
                       f"is not in the app folder\n{detail}")
            hint = "check the module's name and that it is in the app's folder"
        else:
            dist = DISTRIBUTION_OF.get(top, top)
            message = (f"the app imports `{missing}`, which its declared dependencies do not "
                       f"provide (while importing `{module}` at build time)\n{detail}")
            hint = (f"add `{dist}` to {declared.where}"
                    + (f" (the distribution that provides `{top}`)" if dist != top else "")
                    + "; or, if it is optional and imported dynamically, "
                    f"modules = [\"{missing}\"] in [tool.krait] only when it is installed")
    else:
        message = f"importing `{module}` at build time failed: {failed['error']}"
        if detail != failed["error"]:
            message += f"\n{detail}"
        hint = ("fix the error above; krait imports the app once at build time to find what "
                "it needs")
    if module == app.module and "has no callable" in failed["error"]:
        hint = f"check `entry = \"{app.entry}\"` in the app's configuration"
    raise TraceError(message, hint=hint)


# Import names that differ from the distribution to install (the common cases).
DISTRIBUTION_OF = {
    "yaml": "PyYAML", "PIL": "Pillow", "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn", "bs4": "beautifulsoup4", "dateutil": "python-dateutil",
    "jwt": "PyJWT", "dotenv": "python-dotenv", "attr": "attrs", "Crypto": "pycryptodome",
    "psycopg2": "psycopg2-binary", "serial": "pyserial", "zmq": "pyzmq",
    "OpenSSL": "pyOpenSSL", "google": "protobuf", "magic": "python-magic",
    "multipart": "python-multipart", "jose": "python-jose", "socks": "PySocks",
}
