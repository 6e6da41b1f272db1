"""The environment an app is traced in: its interpreter plus exactly its locked packages.

Two ways to get one:

- **krait's own** (the default): a virtual environment in krait's cache, made by uv from
  a base interpreter and the app's lock, keyed by both, so a second build reuses it and a
  changed lock makes a new one. It sees neither krait's packages nor the host's
  site-packages: an image holds only what the app declares.
- **the user's**: ``python`` names a virtual environment's interpreter, or the app folder
  has a ``.venv``; krait then traces with it as it is and installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from krait.config import AppConfig
from krait.errors import BuildError, CommandError
from krait.image.lock import (
    NETWORK_HINT,
    Interpreter,
    Lock,
    LockMode,
    ensure_lock,
    find_uv,
    network_trouble,
    uv_env,
)
from krait.paths import cache_dir, krait_dir, locked
from krait.run import run, spawn

Step = Callable[[str], None]
_PROBE = ("import json, platform, sys; print(json.dumps({'version': list(sys.version_info[:3]),"
          " 'machine': platform.machine(), 'venv': sys.prefix != sys.base_prefix,"
          " 'base': getattr(sys, '_base_executable', sys.executable),"
          " 'implementation': sys.implementation.name}))")


@dataclass(frozen=True)
class BuildPython:
    """The interpreter to trace and compile with, and where its packages came from."""

    python: Path  # run this (a venv's bin/python)
    managed: bool  # True: krait's cached environment; False: the user's own
    lock: Lock | None = None


def _probe(python: Path) -> dict[str, object]:
    try:
        proc = run([python, "-I", "-c", _PROBE], timeout=60)
        info: dict[str, object] = json.loads(proc.stdout)
    except (CommandError, ValueError) as e:
        raise BuildError(f"{python} does not run as a Python interpreter: {e}",
                         hint="point `python` at a CPython 3 interpreter") from None
    if info["implementation"] != "cpython":
        raise BuildError(f"{python} is {info['implementation']}, not CPython",
                         hint="krait images carry CPython; point `python` at one")
    return info


def _user_python(app: AppConfig) -> Path | None:
    """``python`` as the user set it (relative to the app), or the app's own .venv."""
    if app.python:
        path = Path(app.python)
        path = path if path.is_absolute() else app.root / path
        if not path.exists():
            raise BuildError(f"python = {app.python!r}: no such interpreter",
                             hint="point `python` at an interpreter, e.g. /usr/bin/python3.11 "
                             "or .venv/bin/python")
        return path
    for venv in (".venv", "venv"):
        candidate = app.root / venv / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


def default_base_python() -> Path:
    """The base interpreter krait itself runs on (never its virtual environment)."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def check_requires_python(app: AppConfig, version: tuple[int, int, int], python: Path) -> None:
    if not app.requires_python:
        return
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(app.requires_python)
    except InvalidSpecifier:
        raise BuildError(f"pyproject.toml: requires-python = {app.requires_python!r} is not "
                         "a version specifier", hint="write it as e.g. '>=3.11'") from None
    have = ".".join(map(str, version))
    if have not in spec:
        raise BuildError(f"the app requires Python {app.requires_python}, but {python} is {have}",
                         hint="set `python` in [tool.krait] to an interpreter that fits, "
                         "e.g. python = \"/usr/bin/python3.12\"")


def _interpreter(info: dict[str, object]) -> Interpreter:
    return Interpreter(Path(os.path.realpath(str(info["base"]))),
                       tuple(info["version"]),  # type: ignore[arg-type]
                       str(info["machine"]))


def base_interpreter(app: AppConfig) -> Interpreter:
    """The base interpreter the app's dependencies are resolved for: ``python`` (or the
    base of the virtual environment it names), else the one krait runs on."""
    user = _user_python(app)
    interpreter = _interpreter(_probe(user or default_base_python()))
    check_requires_python(app, interpreter.version, interpreter.path)
    return interpreter


def prepare_python(app: AppConfig, mode: LockMode = LockMode.AUTO, step: Step = lambda _: None,
                   upgrade_packages: tuple[str, ...] = ()) -> BuildPython:
    """The interpreter to trace the app with: the user's environment, or krait's cached
    one with the app's locked dependencies installed."""
    user = _user_python(app)
    info = _probe(user or default_base_python())
    interpreter = _interpreter(info)
    check_requires_python(app, interpreter.version, user or interpreter.path)
    if user is not None and info["venv"]:
        return BuildPython(user, managed=False)
    lock = ensure_lock(app, interpreter, mode, step, upgrade_packages)
    return BuildPython(build_environment(interpreter, lock, step), managed=True, lock=lock)


def _environments() -> Path:
    return krait_dir(cache_dir(), "envs")


def environment_key(interpreter: Interpreter, lock: Lock | None) -> str:
    st = interpreter.path.stat()
    h = hashlib.sha256(f"{interpreter.path}\0{interpreter.version}\0{st.st_size}\0"
                       f"{st.st_mtime_ns}\0".encode())
    h.update((lock.text if lock else "").encode())
    return h.hexdigest()[:24]


def build_environment(interpreter: Interpreter, lock: Lock | None, step: Step) -> Path:
    """A virtual environment with exactly the lock's packages (cached); its interpreter."""
    root = _environments()
    key = environment_key(interpreter, lock)
    env = root / key
    ready = env / ".krait-ready"
    if ready.exists():
        return env / "bin" / "python"
    with locked(root / f".{key}.lock"):  # another build making the same one: wait for it
        if ready.exists():
            return env / "bin" / "python"
        tmp = root / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            uv = find_uv()
            run([uv, "venv", "--quiet", "--no-config", "--python", interpreter.path, tmp],
                env=uv_env(), timeout=300)
            if lock is not None:
                _install(uv, tmp / "bin" / "python", lock, step)
            shutil.rmtree(env, ignore_errors=True)
            tmp.rename(env)  # a venv finds its prefix from its own location: safe to move
            ready.write_text(lock.text if lock else "")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return env / "bin" / "python"


def _install(uv: str, python: Path, lock: Lock, step: Step) -> None:
    """``uv pip sync`` the lock into the environment, its progress shown line by line."""
    step(f"installing {len(lock.pins)} locked packages with uv")
    # Bytecode compiled once here: the tracer imports the packages at every build.
    argv = [uv, "pip", "sync", "--compile-bytecode", "--python", str(python), str(lock.path)]
    lines: list[str] = []
    with spawn(argv, env=uv_env()) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                lines.append(line)
                step(f"installing: {line.strip()}")
        code = proc.wait(timeout=900)
    if code != 0:
        detail = "\n".join(lines[-25:])
        if network_trouble(detail):
            raise BuildError(f"cannot reach the package index to install the app's locked "
                             f"dependencies:\n{detail}", hint=NETWORK_HINT)
        raise BuildError(f"installing the app's locked dependencies failed:\n{detail}",
                         hint=f"if {lock.path.name} is stale, `krait lock --upgrade` "
                         "resolves it again")
