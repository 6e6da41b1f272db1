"""The same app, the same server, for all four variants.

A payload folder holds the app's files, copies of krait's guest HTTP server and of its
glue for the servers an app may choose (``krait/guest/http.py`` and ``servers.py``,
standard library only), a small wrapper that adds one read-only path
(``/_krait/stats``: memory and listening ports as the system the app runs in sees them)
and a launcher. The process runs the launcher, which serves the app as krait's PID 1
does (the app's ``server`` setting: builtin, waitress or uvicorn); the unikernel is
built from the same folder with the wrapper as its entry. The container and the
general-purpose VM serve the same wrapper with the server a Debian user would run
(debian.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from krait.bench.compare._common import STATS_PATH
from krait.config import AppConfig
from krait.errors import ConfigError

WRAPPER = "krait_compare_app"
LAUNCHER = "krait_compare_launch.py"
SERVER = "krait_http.py"
SERVERS = "krait_servers.py"
SETTINGS_FILE = "krait_compare.json"

_WRAPPER_SOURCE = '''\
"""The app under comparison, plus {stats} (memory, listening ports)."""

from {module} import {attr} as _app

STATS_PATH = {stats!r}


def _meminfo():
    out = {{}}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.split() and key.replace("_", "").replace("(", "").replace(")", "").isalnum():
                out[key] = int(value.split()[0])
    return out


def _listening():
    ports = set()
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            with open("/proc/net/" + proto) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == state:
                ports.add(proto[:3] + "/" + str(int(cols[1].rsplit(":", 1)[1], 16)))
    return sorted(ports)


def stats():
    # JSON by hand: importing json would add its import (and re's) to the app's start-up.
    mem = ", ".join('"%s": %d' % kv for kv in _meminfo().items())
    ports = ", ".join('"%s"' % p for p in _listening())
    return ('{{"meminfo": {{%s}}, "listening": [%s]}}' % (mem, ports)).encode()
'''

_ASGI = '''
async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == STATS_PATH:
        body = stats()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await _app(scope, receive, send)
'''

_WSGI = '''
def app(environ, start_response):
    if environ.get("PATH_INFO") == STATS_PATH:
        body = stats()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return _app(environ, start_response)
'''

_LAUNCHER_SOURCE = '''\
"""Serve the compared app with krait's guest HTTP server, outside krait's guest."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
with open(os.path.join(HERE, "krait_compare.json")) as f:
    SETTINGS = json.load(f)
os.environ.update(SETTINGS["env"])
os.chdir(HERE)

from krait_compare_app import app  # noqa: E402

port = int(os.environ.get("PORT") or SETTINGS["port"])
ready = lambda: print("ready on port", port, flush=True)  # noqa: E731
if SETTINGS["server"] == "builtin":
    import krait_http

    serve = krait_http.serve_asgi if SETTINGS["kind"] == "asgi" else krait_http.serve_wsgi
    sys.exit(serve(app, port, ready))
import krait_servers  # noqa: E402

sys.exit(krait_servers.serve(SETTINGS["server"], app, port, ready))
'''


def _copy_app(app: AppConfig, into: Path) -> None:
    ignore = shutil.ignore_patterns("*.krait", ".venv", "__pycache__", ".git", "*.pyc")
    for item in sorted(app.root.iterdir()):
        if ignore(str(app.root), [item.name]):
            continue
        if item.is_dir():
            shutil.copytree(item, into / item.name, ignore=ignore)
        else:
            shutil.copy2(item, into / item.name)


def build_payload(app: AppConfig, into: Path) -> AppConfig:
    """Write the payload folder; return the app config the unikernel is built from."""
    if app.kind not in ("asgi", "wsgi") or not app.ports:
        raise ConfigError(f"{app.name}: `krait bench compare` needs an HTTP app "
                          f"(kind asgi or wsgi, with a port), not kind {app.kind!r}")
    into.mkdir(parents=True, exist_ok=True)
    _copy_app(app, into)
    guest = Path(__file__).resolve().parents[2] / "guest"
    (into / SERVER).write_bytes((guest / "http.py").read_bytes())
    (into / SERVERS).write_bytes((guest / "servers.py").read_bytes())
    wrapper = _WRAPPER_SOURCE.format(module=app.module, attr=app.callable, stats=STATS_PATH)
    (into / f"{WRAPPER}.py").write_text(wrapper + (_ASGI if app.kind == "asgi" else _WSGI))
    (into / LAUNCHER).write_text(_LAUNCHER_SOURCE)
    settings = {"env": app.env, "kind": app.kind, "server": app.server, "port": app.ports[0]}
    (into / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return dataclasses.replace(app, root=into, entry=f"{WRAPPER}:app")


def payload_digest(folder: Path) -> str:
    """A digest of the payload's files, to key caches that contain it."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]
