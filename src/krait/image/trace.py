"""Tracing an app's real imports by running its own interpreter at build time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait.config import AppConfig
from krait.errors import TraceError
from krait.image.lock import declared_dependencies
from krait.paths import cache_dir, write_atomically
from krait.run import run

TRACER = Path(__file__).with_name("_tracer.py")
# krait's own package: only its guest runtime goes into images (see runtime_root).
_KRAIT_PACKAGE = Path(__file__).resolve().parents[1]
# The guest runtime each kind needs inside the VM, traced like the app itself.
# The guest runtime imports some modules only when needed (a crash, --env, the last
# message before power-off); they must be in the image all the same.
_GUEST_LAZY = ["krait.guest.init", "termios", "fcntl", "traceback", "base64", "json",
               "krait.guest.missing", "krait.guest.tunnel", "krait.guest.process"]
RUNTIME_MODULES = {
    "main": _GUEST_LAZY,
    "asgi": [*_GUEST_LAZY, "krait.guest.http"],
    # WSGI views run in loop.run_in_executor's default pool: imported on first request.
    "wsgi": [*_GUEST_LAZY, "krait.guest.http", "concurrent.futures.thread"],
}
# Python itself needs these at start-up even when the build host never imported them.
STARTUP_MODULES = ["encodings.utf_8", "encodings.ascii", "encodings.latin_1", "os"]


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
    distributions: dict[str, list[str]]
    packages: dict[str, list[str]]
    startup: frozenset[str]
    runtime: Path  # where krait.guest came from (see runtime_root)
    absent: frozenset[str] = frozenset()  # submodules looked for at build time, not found
    # Imported later (in functions, on first use), found by reading the traced modules'
    # sources; and the codecs Python looks up by name.
    static: dict[str, Path] = field(default_factory=dict)
    heap_kib: int = 0  # anonymous memory in use once the app was imported
    mapped_kib: int = 0  # file-backed memory resident then (interpreter, libraries)

    @property
    def python_name(self) -> str:
        return f"python{self.version[0]}.{self.version[1]}"


def runtime_root() -> Path:
    """A folder holding krait's guest runtime and nothing else of krait's (a copy, keyed by
    its contents): the tracer puts it on the app's path, so an image can never pick up
    krait's own dependencies from the environment krait is installed in."""
    sources = [_KRAIT_PACKAGE / "__init__.py",
               *sorted((_KRAIT_PACKAGE / "guest").glob("*.py"))]
    h = hashlib.sha256()
    for src in sources:
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    root = cache_dir() / "runtime" / h.hexdigest()[:16]
    if not (root / "krait" / "guest" / "init.py").exists():
        for src in sources:
            rel = src.relative_to(_KRAIT_PACKAGE.parent)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomically(root / rel, src.read_bytes())
    return root


def _scan_cache() -> Path:
    """Where the tracer keeps what each source file imports (keyed by path, size and
    mtime, so one file serves every interpreter and app)."""
    folder = cache_dir() / "objects"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "imports.json"


def runtime_modules(app: AppConfig) -> list[str]:
    """The guest runtime for the app's kind, and the server from its venv, if it names one."""
    if app.kind == "main" or app.server == "builtin":
        return RUNTIME_MODULES[app.kind]
    return [*RUNTIME_MODULES["main"], "krait.guest.servers", app.server]


def trace_app(app: AppConfig, python: Path, declared_roots: bool = False) -> Trace:
    """Import the app in a subprocess of its own interpreter and report what it used;
    ``declared_roots``: every package of the environment may be used (krait made it from
    the app's lock), so read those the app did not import too."""
    runtime = runtime_root()
    request = {
        "app_root": str(app.root),
        "runtime_path": str(runtime),
        "runtime_modules": [*STARTUP_MODULES, *runtime_modules(app)],
        "server": app.server if app.kind != "main" else "builtin",
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
        distributions=report["distributions"],
        packages=report["packages"],
        startup=frozenset(report["startup"]),
        runtime=runtime,
        absent=frozenset(report.get("absent", [])),
        static={k: Path(v) for k, v in report.get("static", {}).items()},
        heap_kib=int(report.get("heap_kib", 0)),
        mapped_kib=int(report.get("mapped_kib", 0)),
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
