"""Many apps behind one port: a routes file maps host names and path prefixes to images,
each with scale settings of its own.

    [[route]]
    name = "api"                 # optional: from the host and path
    host = "api.example"         # optional: any host
    path = "/v1"                 # optional: "/" (a prefix, whole segments: not /v10)
    image = "api.krait"          # relative to the routes file
    idle = "30s"                 # and pause ("off"), min, max, per-instance
    env = ["KEY=VALUE"]          # and volume, connect: as the serve flags

Parsed into frozen :class:`RouteSpec`s; :func:`find_route` is pure.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait.errors import ConfigError
from krait.fleet.policy import ScalePolicy

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_KEYS = {"name", "host", "path", "image", "idle", "pause", "min", "max", "per-instance",
         "env", "volume", "connect"}
MAX_ROUTES = 256


def parse_duration(value: str) -> float:
    """30, 30s, 500ms, 2m, 1h -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", value)
    if not match:
        raise ConfigError(f"{value!r} is not a duration", hint="use e.g. 30s, 500ms, 2m")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class RouteSpec:
    name: str
    image: Path
    host: str | None = None  # lower case, no port; None: any host
    path: str = "/"
    policy: ScalePolicy = field(default_factory=ScalePolicy)
    env: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of strings")
    return tuple(value)


def _route(table: Any, base: Path, index: int) -> RouteSpec:
    where = f"route {index + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} is not a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}",
                          hint=f"keys: {', '.join(sorted(_KEYS))}")
    image = table.get("image")
    if not isinstance(image, str):
        raise ConfigError(f"{where}: `image` (a .krait file) is needed")
    host = table.get("host")
    if host is not None and (not isinstance(host, str)
                             or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host)):
        raise ConfigError(f"{where}: `host` {host!r} is not a host name")
    path = table.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 1024:
        raise ConfigError(f"{where}: `path` must begin with /")
    path = path.rstrip("/") or "/"
    name = table.get("name") or re.sub(r"[^A-Za-z0-9_.-]+", "-",
                                       f"{host or 'any'}{path}").strip("-.")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise ConfigError(f"{where}: `name` {name!r} is not a name")
    try:
        pause = table.get("pause", "2s")
        policy = ScalePolicy(
            idle_seconds=parse_duration(str(table.get("idle", "30s"))),
            pause_seconds=None if pause == "off" else parse_duration(str(pause)),
            min_instances=int(table.get("min", 0)), max_instances=int(table.get("max", 1)),
            per_instance=int(table.get("per-instance", 10)))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: min, max and per-instance are numbers") from None
    if not 0 <= policy.min_instances <= policy.max_instances or policy.max_instances < 1:
        raise ConfigError(f"{where}: need 0 <= min <= max and max >= 1")
    return RouteSpec(name, (base / image).resolve(), host.lower() if host else None, path,
                     policy, _strings(table.get("env", []), "env", where),
                     _strings(table.get("volume", []), "volume", where),
                     _strings(table.get("connect", []), "connect", where))


def load_routes(path: Path) -> list[RouteSpec]:
    """The routes of a routes file, checked: a ConfigError names what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the routes file {path}: {e}") from None
    tables = data.get("route")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[route]] tables")
    if len(tables) > MAX_ROUTES:
        raise ConfigError(f"{path}: more than {MAX_ROUTES} routes")
    routes = [_route(t, path.parent, i) for i, t in enumerate(tables)]
    places = [(r.host, r.path) for r in routes]
    if len(set(places)) != len(places):
        raise ConfigError(f"{path}: two routes have the same host and path")
    names = [r.name for r in routes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two routes are named "
                          f"{next(n for n in names if names.count(n) > 1)!r}")
    return routes


def find_route(routes: Sequence[RouteSpec], host: bytes | None, target: bytes
               ) -> RouteSpec | None:
    """The route a request goes to: its host's routes (or any host's), the longest path
    prefix of whole segments. None: no route (404)."""
    name = (host or b"").decode("latin-1").lower()
    if name.startswith("["):  # [v6]:port
        name = name.partition("]")[0] + "]"
    elif ":" in name:  # host:port
        name = name.rpartition(":")[0]
    path = target.split(b"?", 1)[0].decode("latin-1")
    best: RouteSpec | None = None
    for route in routes:
        if route.host is not None and route.host != name:
            continue
        prefix = route.path
        if not (prefix == "/" or path == prefix or path.startswith(prefix + "/")):
            continue
        # A host's own route beats an any-host one; then the longer prefix.
        rank = (route.host is not None, len(prefix))
        if best is None or rank > (best.host is not None, len(best.path)):
            best = route
    return best
