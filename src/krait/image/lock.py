"""The app's declared dependencies and their lock, ``krait.lock`` beside the app.

What an app needs comes from its own files, in this order: the ``dependencies``
setting, ``[project].dependencies`` (with the ``extras`` it names) of a pyproject.toml,
or a ``requirements.txt``. krait resolves them with uv into a lock pinned by hash for
the build interpreter, writes it once, and reuses it: two builds a month apart install
the same files. When the declared dependencies change, the lock is brought up to date
with the pins it already has kept (only what changed is resolved again), unless the
build asked for ``locked``, which refuses instead.

The lock is uv's requirements format with a header of krait's; its ``inputs`` line is a
digest of what was declared, which is how an out-of-date lock is recognised.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from krait.config import AppConfig
from krait.errors import BuildError
from krait.paths import write_atomically
from krait.run import run

LOCK_FILE = "krait.lock"
REQUIREMENTS_FILE = "requirements.txt"
_INPUTS = re.compile(r"^# inputs: (sha256:[0-9a-f]{64})$", re.MULTILINE)
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)
# What uv may see of our environment besides krait's allow-list: its own settings, the
# proxies and certificates that reach the package index.
_UV_PASSED = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE",
              "SSL_CERT_DIR", "XDG_CACHE_HOME")


class LockMode(enum.Enum):
    AUTO = "auto"  # create the lock if missing, bring it up to date if the inputs changed
    LOCKED = "locked"  # a missing or out-of-date lock is an error (CI)
    UPGRADE = "upgrade"  # resolve everything again, to the newest versions allowed


@dataclass(frozen=True)
class Interpreter:
    """A base (not virtual-environment) interpreter to build with."""

    path: Path
    version: tuple[int, int, int]
    machine: str

    @property
    def short(self) -> str:
        return f"CPython {self.version[0]}.{self.version[1]}"


@dataclass(frozen=True)
class Declared:
    """The app's dependencies as it declares them."""

    where: str  # for messages: "pyproject.toml [project].dependencies"
    requirements: tuple[str, ...] = ()  # requirement strings (extras' included)
    file: str | None = None  # or a requirements file (relative to the app), passed to uv
    extras: tuple[str, ...] = ()
    source_text: str = ""  # the file's contents, for the digest

    @property
    def empty(self) -> bool:
        return not self.requirements and self.file is None

    def digest(self, python: Interpreter) -> str:
        h = hashlib.sha256(json.dumps({
            "python": list(python.version[:2]), "machine": python.machine,
            "requirements": list(self.requirements), "extras": list(self.extras),
            "file": self.file, "text": self.source_text}, sort_keys=True).encode())
        return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class Lock:
    path: Path
    text: str

    @property
    def inputs(self) -> str | None:
        m = _INPUTS.search(self.text)
        return m.group(1) if m else None

    @property
    def pins(self) -> dict[str, str]:
        return {name.lower(): version for name, version in _PINNED.findall(self.text)}


def declared_dependencies(app: AppConfig) -> Declared:
    """What the app declares, from the first of its settings (or [project]) and a
    requirements.txt beside it that has any."""
    if app.dependencies or app.extras:
        requirements = (*app.dependencies,
                        *(r for e in app.extras for r in app.optional_dependencies.get(e, ())))
        if app.config_file == "pyproject.toml" and not _project_overridden(app):
            where = "pyproject.toml [project].dependencies"
        else:
            where = f"{app.config_file} `dependencies`"
        return Declared(where, requirements, extras=app.extras)
    requirements_txt = app.root / REQUIREMENTS_FILE
    if requirements_txt.is_file():
        return Declared(REQUIREMENTS_FILE, (), REQUIREMENTS_FILE, (),
                        requirements_txt.read_text())
    return Declared(_where_to_declare(app))


def _project_overridden(app: AppConfig) -> bool:
    """True when [tool.krait] sets `dependencies` itself (it then wins over [project])."""
    import tomllib

    data = tomllib.loads((app.root / "pyproject.toml").read_text())
    return "dependencies" in data.get("tool", {}).get("krait", {})


def _where_to_declare(app: AppConfig) -> str:
    if app.config_file == "pyproject.toml":
        return "pyproject.toml [project].dependencies"
    return "krait.toml `dependencies` (or a requirements.txt)"


def read_lock(app: AppConfig) -> Lock | None:
    path = app.root / LOCK_FILE
    return Lock(path, path.read_text()) if path.is_file() else None


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise BuildError("uv is not installed (krait resolves and installs dependencies with it)",
                     hint="reinstall krait (`make venv`), or `pip install uv`")


def uv_env() -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items()
              if k.startswith("UV_") or k.upper() in _UV_PASSED}
    return {**passed, "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}


def ensure_lock(app: AppConfig, python: Interpreter, mode: LockMode = LockMode.AUTO,
                step: Callable[[str], None] = lambda _: None,
                upgrade_packages: tuple[str, ...] = ()) -> Lock | None:
    """The app's lock, up to date with what it declares; None if it declares nothing."""
    declared = declared_dependencies(app)
    existing = read_lock(app)
    if declared.empty:
        if existing is not None and mode is LockMode.LOCKED and existing.pins:
            raise BuildError(f"{existing.path.name} pins packages, but the app declares no "
                             f"dependencies any more",
                             hint="run `krait lock` to update it, or delete it")
        return None
    want = declared.digest(python)
    fresh = (existing is not None and existing.inputs == want and mode is not LockMode.UPGRADE
             and not upgrade_packages)
    if fresh:
        return existing
    if mode is LockMode.LOCKED:
        if existing is None:
            raise BuildError(f"the app has no {LOCK_FILE} (--locked was given)",
                             hint="run `krait lock` (or build without --locked) and commit it")
        raise BuildError(f"{LOCK_FILE} is out of date with {declared.where}",
                         hint="run `krait lock` (or build without --locked) to update it")
    step(f"resolving the app's dependencies ({declared.where}) with uv")
    return write_lock(app, declared, python, existing, want,
                      upgrade=mode is LockMode.UPGRADE, upgrade_packages=upgrade_packages)


def write_lock(app: AppConfig, declared: Declared, python: Interpreter, existing: Lock | None,
               inputs: str, upgrade: bool = False,
               upgrade_packages: tuple[str, ...] = ()) -> Lock:
    """Resolve ``declared`` for ``python`` and write the lock; the previous lock's pins are
    kept where they still fit (uv reads the output file it is asked to write)."""
    with tempfile.TemporaryDirectory(prefix="krait-lock-") as tmp:
        out = Path(tmp) / LOCK_FILE
        if existing is not None:
            out.write_text(existing.text)
        cwd = app.root
        if declared.file is None:
            # A fixed relative name: uv's annotations ("# via -r ...") name it in the lock.
            (Path(tmp) / "declared.in").write_text("\n".join(declared.requirements) + "\n")
            cwd, source = Path(tmp), "declared.in"
        else:
            source = declared.file
        argv = [find_uv(), "pip", "compile", source, "--python", str(python.path),
                "--generate-hashes", "--no-header", "--quiet", "-o", str(out)]
        if upgrade:
            argv.append("--upgrade")
        for name in upgrade_packages:
            argv += ["--upgrade-package", name]
        proc = run(argv, cwd=cwd, env=uv_env(), check=False, timeout=900)
        if proc.returncode != 0:
            raise resolution_error(declared, python, proc.stderr)
        body = out.read_text()
    header = (f"# {LOCK_FILE}: the app's dependencies, pinned with hashes for {python.short} "
              f"on {python.machine} Linux.\n"
              f"# Resolved by `krait lock` (uv) from {declared.where}.\n"
              f"# inputs: {inputs}\n"
              "# Commit it: builds install exactly this; `krait lock --upgrade` refreshes it.\n")
    text = header + body
    path = app.root / LOCK_FILE
    write_atomically(path, text.encode())
    return Lock(path, text)


NETWORK_HINT = ("check the network (or UV_INDEX_URL / the proxy settings); with no network, "
                "every package must already be in uv's cache (UV_OFFLINE=1)")


def network_trouble(uv_output: str) -> bool:
    return bool(re.search(r"Failed to fetch|tcp connect error|dns error|Connection refused|"
                          r"timed out|Network is unreachable|offline mode", uv_output))


def resolution_error(declared: Declared, python: Interpreter, stderr: str) -> BuildError:
    """uv's failure, said for a krait user."""
    detail = "\n".join(line for line in stderr.strip().splitlines() if line.strip())[-2000:]
    hint = f"fix {declared.where}, then build again"
    if network_trouble(stderr):
        message = "cannot reach the package index to resolve the app's dependencies"
        hint = NETWORK_HINT
    elif "no wheels with a matching platform tag" in stderr or \
            "no wheels with a matching Python" in stderr or "has no usable wheels" in stderr:
        names = sorted(set(re.findall(r"Because (\S+?)(?:[<>=!~]=?\S*)? has no wheels", stderr)))
        message = (f"{', '.join(names) or 'a dependency'} has no wheel for this platform "
                   f"({python.short}, {python.machine} Linux)")
        hint = ("pick a version or a package that publishes a wheel for Linux and this Python "
                f"({declared.where})")
    elif "No solution found" in stderr:
        message = f"the app's dependencies cannot be resolved ({declared.where})"
    elif "Failed to build" in stderr or "Failed to download and build" in stderr:
        message = "a dependency has no wheel and building it from source failed"
        hint = ("pick a version that publishes a wheel for this Python, or install the build "
                "tools it needs")
    else:
        message = f"resolving the app's dependencies failed ({declared.where})"
    return BuildError(f"{message}:\n{detail}", hint=hint)
