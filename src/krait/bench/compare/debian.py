"""How the container and the general-purpose VM serve the app: as a Debian 12 user would.

Debian 12 keeps pip out of its system Python (PEP 668), so its user makes a virtual
environment, installs the app's pinned requirements and a production server into it, and
starts that server: gunicorn for a WSGI app (sync workers, as many as gunicorn's own docs
advise: 2 x cores + 1), uvicorn for an ASGI app (one process, its default). The process
variant and the unikernel serve the app as krait does (its ``server`` setting), so the
comparison is "krait's way" against "the usual way", not one server against itself.

The environment is made on the host with uv from the app's krait.lock (the versions the
unikernel carries), at /opt/venv, its interpreter a link to /usr/bin/python3.11: Debian's
interpreter, at that same path in the Debian root, so the environment works there. It is
made once per lock and server and copied into each root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from krait.bench.compare._common import VariantSkipped
from krait.bench.compare.payload import WRAPPER
from krait.config import AppConfig
from krait.image.environment import base_interpreter
from krait.image.lock import Lock, ensure_lock, find_uv, uv_env
from krait.paths import cache_dir, krait_dir
from krait.run import run

APP_DIR = "/opt/app"
VENV_DIR = "/opt/venv"
# Debian 12's python3 is this interpreter; the host (`make deps`) has the same package.
DEBIAN_PYTHON = Path("/usr/bin/python3.11")
SERVER_OF_KIND = {"wsgi": "gunicorn", "asgi": "uvicorn"}
# What `pip install gunicorn` / `pip install uvicorn` gave on 2026-12-03, pinned so that
# reruns measure the same thing; an app that locks its server gets its own pin instead.
SERVER_PINS = {"gunicorn": "gunicorn==27.0.1", "uvicorn": "uvicorn==0.54.0"}


def server_of(app: AppConfig) -> str:
    return SERVER_OF_KIND[app.kind]


def server_requirement(server: str, lock: Lock | None) -> str:
    """The server at the version the app locks it (FastAPI apps often depend on uvicorn),
    else at the pinned version a user installing it would get."""
    pinned = (lock.pins if lock else {}).get(server)
    return f"{server}=={pinned}" if pinned else SERVER_PINS[server]


def gunicorn_workers(cores: int) -> int:
    """gunicorn's documented starting point for the number of workers."""
    return 2 * max(cores, 1) + 1


def server_argv(app: AppConfig, port: int, cores: int) -> list[str]:
    """The command that serves the payload's app (the stats wrapper around the app) on
    ``port``, run with APP_DIR as the working directory."""
    python = f"{VENV_DIR}/bin/python"
    target = f"{WRAPPER}:app"
    if server_of(app) == "gunicorn":
        # Workers' heartbeat files in memory, as gunicorn's docs advise for containers
        # (whose root, like this one's, may be read-only); no control socket (gunicorn
        # >= 25 makes one in $HOME for its `gunicornc` tool; the unikernel has no such
        # interface, and the container's $HOME is read-only).
        return [python, "-m", "gunicorn", "--bind", f"0.0.0.0:{port}",
                "--workers", str(gunicorn_workers(cores)), "--worker-tmp-dir", "/dev/shm",
                "--no-control-socket", "--chdir", APP_DIR, target]
    # krait's uvicorn logs no access lines either (guest/servers.py); the same here, so
    # the VM's journal writes do not count against its requests/s.
    return [python, "-m", "uvicorn", "--host", "0.0.0.0", "--port", str(port),
            "--app-dir", APP_DIR, "--no-access-log", target]


def app_lock(app: AppConfig) -> Lock | None:
    """The app's lock, brought up to date as `krait build` would (None: no dependencies)."""
    return ensure_lock(app, base_interpreter(app))


def venv_key(lock: Lock | None, requirement: str) -> str:
    st = DEBIAN_PYTHON.stat()
    h = hashlib.sha256(f"{st.st_size}\0{st.st_mtime_ns}\0{requirement}\0".encode())
    h.update((lock.text if lock else "").encode())
    return h.hexdigest()[:16]


def build_venv(app: AppConfig) -> Path:
    """A virtual environment (cached) with the app's locked packages and its server."""
    if not DEBIAN_PYTHON.exists():
        raise VariantSkipped(f"no {DEBIAN_PYTHON} to make the Debian root's environment with",
                             hint="apt-get install python3.11")
    lock = app_lock(app)
    requirement = server_requirement(server_of(app), lock)
    venv = krait_dir(cache_dir(), "bench", "venvs") / venv_key(lock, requirement)
    if (venv / ".ready").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    uv, env = find_uv(), uv_env()
    run([uv, "venv", "--quiet", "--no-config", "--python", DEBIAN_PYTHON, venv], env=env,
        timeout=300)
    python = venv / "bin" / "python"
    # Bytecode compiled at install, as pip does by default: the root may be read-only.
    if lock is not None:
        run([uv, "pip", "sync", "--quiet", "--compile-bytecode", "--python", python, lock.path],
            env=env, timeout=900)
    run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python,
         requirement], env=env, timeout=900)
    (venv / ".ready").write_text(requirement + "\n")
    return venv


def install(root: Path, payload: Path, venv: Path) -> None:
    """The payload at APP_DIR and the environment at VENV_DIR of a Debian root."""
    if not (root / DEBIAN_PYTHON.relative_to("/")).exists():
        raise VariantSkipped(f"the Debian root {root} has no {DEBIAN_PYTHON}",
                             hint="delete the cached root so it is bootstrapped again")
    for src, dest in ((payload, APP_DIR), (venv, VENV_DIR)):
        target = root / dest.lstrip("/")
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target, symlinks=True)
    (root / VENV_DIR.lstrip("/") / ".ready").unlink(missing_ok=True)


def cores() -> int:
    """The cores a container sees (it is not given a CPU limit)."""
    return len(os.sched_getaffinity(0))
