"""Tracing an app's real imports by running its own interpreter at build time."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krait.config import AppConfig
from krait.errors import BuildError, TraceError
from krait.run import run

TRACER = Path(__file__).with_name("_tracer.py")
# krait's own package folder's parent: the tracer imports krait.guest from here.
RUNTIME_PATH = Path(__file__).resolve().parents[2]
# The guest runtime each kind needs inside the VM, traced like the app itself.
# The guest runtime imports some modules only when needed (a crash, --env, the last
# message before power-off); they must be in the image all the same.
_GUEST_LAZY = ["krait.guest.init", "termios", "traceback", "base64", "json",
               "krait.guest.missing"]
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
    modules: dict[str, Path]
    shared_objects: tuple[Path, ...]
    distributions: dict[str, list[str]]
    packages: dict[str, list[str]]
    startup: frozenset[str]
    absent: frozenset[str] = frozenset()  # submodules looked for at build time, not found

    @property
    def python_name(self) -> str:
        return f"python{self.version[0]}.{self.version[1]}"


def runtime_modules(app: AppConfig) -> list[str]:
    """The guest runtime for the app's kind, and the server from its venv, if it names one."""
    if app.kind == "main" or app.server == "builtin":
        return RUNTIME_MODULES[app.kind]
    return [*RUNTIME_MODULES["main"], "krait.guest.servers", app.server]


def find_interpreter(app: AppConfig) -> Path:
    """The app's Python: ``python`` from its settings, its .venv, or the one running krait."""
    if app.python:
        path = Path(app.python)
        path = path if path.is_absolute() else app.root / path
        if not path.exists():
            raise BuildError(f"python = {app.python!r}: no such interpreter",
                             hint="point `python` at the app's interpreter, e.g. .venv/bin/python")
        return path
    for venv in (".venv", "venv"):
        candidate = app.root / venv / "bin" / "python"
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def trace_app(app: AppConfig, python: Path | None = None) -> Trace:
    """Import the app in a subprocess of its own interpreter and report what it used."""
    python = python or find_interpreter(app)
    request = {
        "app_root": str(app.root),
        "runtime_path": str(RUNTIME_PATH),
        "runtime_modules": [*STARTUP_MODULES, *runtime_modules(app)],
        "server": app.server if app.kind != "main" else "builtin",
        "modules": list(app.modules),
        "entry_module": app.module,
        "callable": app.callable,
    }
    proc = run([python, "-I", TRACER], input=json.dumps(request).encode(), check=False,
               cwd=app.root,
               env={"PYTHONDONTWRITEBYTECODE": "1"})
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
        absent=frozenset(report.get("absent", [])),
    )


def _raise_for_failure(app: AppConfig, failed: dict[str, Any] | None) -> None:
    if not failed:
        return
    module, missing = failed["module"], failed.get("missing")
    tb = failed.get("traceback", "").strip()
    detail = "\n".join(tb.splitlines()[-8:]) if tb else failed["error"]
    if missing:
        message = (f"importing `{module}` at build time failed: module `{missing}` "
                   f"is not installed for the app's interpreter\n{detail}")
        hint = (f"install `{missing}` in the app's environment (pip install ...), or, if it is "
                f"optional and imported dynamically, add it to `modules` in [tool.krait]")
    else:
        message = f"importing `{module}` at build time failed: {failed['error']}"
        if detail != failed["error"]:
            message += f"\n{detail}"
        hint = ("fix the error above; krait imports the app once at build time to find what "
                "it needs")
    if module == app.module and "has no callable" in failed["error"]:
        hint = f"check `entry = \"{app.entry}\"` in the app's configuration"
    raise TraceError(message, hint=hint)


