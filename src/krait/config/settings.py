"""The one table of an app's settings.

Each row gives the TOML key, whether the value is baked into the image at build
time or may change at each boot, how to parse it, its default and its help text.
The table drives the ``[tool.krait]`` keys, the CLI flags of ``krait build`` and
``krait run``, and ``krait settings`` (the docs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from krait.errors import ConfigError
from krait.guest import protocol
from krait.names import RULE, valid_name

Stage = Literal["build", "boot"]
MAX_ENTRY = 200
# The largest request body an app may accept: it is held in guest memory.
MAX_BODY = 1 << 30
KINDS = ("main", "asgi", "wsgi")
# What may serve each kind inside the guest; all but "builtin" come from the app's venv.
SERVERS = {"builtin": ("asgi", "wsgi"), "uvicorn": ("asgi",), "waitress": ("wsgi",)}


@dataclass(frozen=True)
class Setting:
    key: str
    stage: Stage
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"
    repeatable: bool = False  # on the command line: --flag may be given several times

    @property
    def field(self) -> str:
        return self.key.replace("-", "_")

    @property
    def flag(self) -> str:
        return "--" + self.key


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _image_name(value: Any) -> str:
    # An image's name is also a file name (NAME.krait, snapshots): see krait.names.
    name = _str(value)
    if not valid_name(name):
        raise ValueError(f"expected {RULE}")
    return name


def _entry(value: Any) -> str:
    entry = _str(value)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", entry):
        raise ValueError("expected 'module:callable', e.g. 'app:app' or 'service.main:run'")
    # A module is a file name: a longer one is "File name too long" at build time.
    if len(entry) > MAX_ENTRY:
        raise ValueError(f"expected at most {MAX_ENTRY} characters")
    return entry


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise ValueError(f"expected one of {', '.join(KINDS)}")
    return str(value)


def _server(value: Any) -> str:
    if value not in SERVERS:
        raise ValueError(f"expected one of {', '.join(SERVERS)}")
    return str(value)


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected a whole number")
        n = int(value)
        if not lo <= n <= hi:
            raise ValueError(f"expected a number from {lo} to {hi}")
        return n

    return parse


def _ports(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    port = _int(1, 65535)
    ports = tuple(port(p) for p in items if str(p).strip())
    twice = sorted({p for p in ports if ports.count(p) > 1})
    if twice:
        raise ValueError(f"port {twice[0]} is given twice")
    return ports


def parse_memory(value: Any) -> int:
    """'64M', '1G' or a number of MiB -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([MmGg]i?[Bb]?)?\s*", str(value))
    if not m:
        raise ValueError("expected a size such as 64M or 1G")
    mib = int(m.group(1)) * (1024 if (m.group(2) or "M")[0] in "Gg" else 1)
    if not 16 <= mib <= 65536:
        raise ValueError("expected between 16M and 64G")
    return mib


def parse_size(value: Any, maximum: int | None = None) -> int:
    """'1M', '512K', '2G' or a number of bytes -> bytes (at most ``maximum``)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:([KkMmGg])i?[Bb]?)?\s*", str(value))
    if not m or isinstance(value, bool):
        raise ValueError("expected a size such as 512K, 1M or 1G")
    size = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[
        (m.group(2) or "").lower()]
    if maximum is not None and size > maximum:
        unit = "G" if maximum >= 1 << 30 else "M"
        raise ValueError(f"expected at most {maximum >> (30 if unit == 'G' else 20)}{unit}")
    return size


def _max_body(value: Any) -> int:
    return parse_size(value, MAX_BODY)


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(_str(v) for v in items)


def parse_env(value: Any) -> dict[str, str]:
    """A TOML table, or KEY=VALUE strings from the command line."""
    pairs: list[tuple[str, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in _strings(value):
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: expected KEY=VALUE")
            pairs.append((key, val))
    env = {}
    for key, val in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{shown(key)} is not a valid environment variable name")
        # A number reads as one; a table, a list or a boolean has no one way to be text.
        if type(val) not in (str, int, float):
            raise ValueError(f"{key} = {shown(val)}: expected a string (or a number)")
        env[key] = str(val)
    return env


@dataclass(frozen=True)
class Service:
    """A service outside the VM that the app may reach (``connect``): inside the guest it
    is 127.0.0.1:guest_port, and that leads to host:port as seen from the host."""

    name: str
    host: str
    port: int
    guest_port: int

    @classmethod
    def parse(cls, text: str) -> Service:
        name, sep, address = text.partition("=")
        host, colon, port = address.rpartition(":")
        name = name.strip().lower()
        if not sep or not colon or not port.isdigit():
            raise ValueError(f"{text!r}: expected NAME=HOST:PORT, e.g. db=127.0.0.1:5432")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
            raise ValueError(f"{text!r}: a name is a letter, then letters, digits or '_'")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\]", host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or address")
        number = _int(1, 65535)(int(port))
        return cls(name, host.strip("[]"), number, number)

    @property
    def env_var(self) -> str:
        from krait.guest.tunnel import service_env

        return service_env(self.name)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name}={host}:{self.port}"


def parse_connect(value: Any) -> tuple[str, ...]:
    """NAME=HOST:PORT strings, each name and each port once."""
    services = [Service.parse(v) for v in _strings(value)]
    for attr in ("name", "guest_port"):
        seen = [getattr(s, attr) for s in services]
        twice = sorted({str(v) for v in seen if seen.count(v) > 1})
        if twice:
            raise ValueError(f"{attr.replace('_', ' ')} {', '.join(twice)} given twice")
    return tuple(str(s) for s in services)


CHECK_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def parse_check(value: Any) -> tuple[str, ...]:
    """'PATH' or 'METHOD PATH' strings: requests the build sends to prove the image serves."""
    items = value if isinstance(value, list | tuple) else [value]
    if len(items) > 32:
        raise ValueError("at most 32 requests")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("expected strings such as '/' or 'GET /health'")
        method, _, path = item.strip().rpartition(" ")
        method = method.strip().upper() or "GET"
        if method not in CHECK_METHODS:
            raise ValueError(f"{item!r}: the method is one of {', '.join(CHECK_METHODS)}")
        if not re.fullmatch(r"/[\x21-\x7e]{0,2000}", path):
            raise ValueError(f"{item!r}: a path starts with '/' and has no spaces")
        out.append(f"{method} {path}")
    return tuple(out)


def _backend(value: Any) -> str:
    # Which backends exist is the registry's to say (krait.vmm.backends), when one is
    # chosen: a setting is only a name here.
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", value):
        raise ValueError("expected a backend's name, e.g. qemu")
    return value


def _mount_points(value: Any) -> tuple[str, ...]:
    points = _strings(value)
    for point in points:
        if not re.fullmatch(protocol.VOLUME_MOUNT, point):
            raise ValueError(f"{point!r}: a volume is mounted at /data or /mnt/NAME")
    return points


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


SETTINGS: tuple[Setting, ...] = (
    Setting("name", "build", _image_name, None, "Image name; NAME.krait is written. "
            "Defaults to [project].name or the folder's name.", "NAME"),
    Setting("entry", "build", _entry, None, "What to run: 'module:callable'.", "MODULE:CALLABLE"),
    Setting("kind", "build", _kind, "main", "How to run the entry: 'main' calls it and its "
            "return value is the exit status; 'asgi' and 'wsgi' serve it over HTTP.", "KIND"),
    Setting("server", "build", _server, "builtin", "What serves an asgi/wsgi app in the "
            "guest: 'builtin' (krait's small asyncio server), 'uvicorn' (asgi) or 'waitress' "
            "(wsgi), imported from the app's environment.", "SERVER"),
    Setting("ports", "build", _ports, None, "TCP ports the app listens on (default 8080 for "
            "asgi/wsgi apps, none for main).", "PORT[,PORT]"),
    Setting("env", "build", parse_env, {}, "Environment baked into the image.", "KEY=VALUE",
            repeatable=True),
    Setting("include", "build", _strings, (), "Extra files or folders (relative to the app) "
            "copied into the image. The app folder's own data files (templates, static "
            "files) are copied anyway; `include` is for hidden files and the like.", "PATH",
            repeatable=True),
    Setting("ignore", "build", _strings, (), "Files of the app folder to leave out of the "
            "image (glob patterns relative to the app, e.g. 'data/*.csv'). Build files, "
            "tests, virtual environments, hidden files and keys are never copied.", "GLOB",
            repeatable=True),
    Setting("modules", "build", _strings, (), "Modules the app imports dynamically, which "
            "tracing cannot see; 'pkg.*' takes all of pkg's importable submodules.", "MODULE",
            repeatable=True),
    Setting("exclude", "build", _strings, (), "Modules the trace saw but the guest does not "
            "need (e.g. ssl, which asyncio imports only if it can).", "MODULE", repeatable=True),
    Setting("tls-cert", "build", _str, None, "A PEM certificate baked into the image at "
            "/krait/app/.krait/tls/cert.pem: a file in the app folder (relative to it), or "
            "any file given on the command line; `krait build --self-signed` makes one.",
            "PATH"),
    Setting("tls-key", "build", _str, None, "The PEM private key for tls-cert, baked in at "
            "/krait/app/.krait/tls/key.pem (the image is then 0600). Named in the app's "
            "settings, it is baked only with `krait build --bake-tls-key`.", "PATH"),
    Setting("dependencies", "build", _strings, (), "What the app needs from the package "
            "index (requirement strings). In a pyproject.toml, [project].dependencies is read "
            "when this is not set; without either, a requirements.txt beside it.", "REQUIREMENT",
            repeatable=True),
    Setting("extras", "build", _strings, (), "Optional dependency groups of "
            "[project.optional-dependencies] to install too.", "EXTRA", repeatable=True),
    Setting("python", "build", _str, None, "The interpreter to build with. A base interpreter "
            "(e.g. /usr/bin/python3.11): krait installs the app's locked dependencies for it "
            "in its cache. A virtual environment's (e.g. .venv/bin/python): used as it is, "
            "nothing installed. Default: the app's .venv if it has one, else the Python krait "
            "runs on.", "PATH"),
    Setting("sources", "build", _bool, False, "Ship .py sources next to the bytecode.", "BOOL"),
    Setting("max-body", "build", _max_body, 1 << 20, "Largest request body the builtin "
            "server accepts (larger: 413), e.g. 10M, at most 1G. Bodies held at once never "
            "exceed a quarter of the guest's memory (more: 503).", "SIZE"),
    Setting("volumes", "build", _mount_points, (), "Where the image expects data volumes "
            "('/data' or '/mnt/NAME'); a boot without `--volume FILE:PATH` for each is an "
            "error.", "PATH", repeatable=True),
    Setting("check", "build", parse_check, None, "Requests `krait build` sends to the "
            "image, run once as a process, to prove that it serves ('PATH' or 'METHOD "
            "PATH'); an answer of 500 or more fails the build. Default: '/' for an asgi/wsgi "
            "app that declares no `connect` (its services are not there at build time); a "
            "main app that declares ports must start and listen on them. [] skips the check, "
            "as `krait build --no-check` does.", "REQUEST", repeatable=True),
    Setting("memory", "boot", parse_memory, None, "Guest memory, e.g. 64M (default: what the "
            "image needs, measured at build time).", "SIZE"),
    Setting("vcpus", "boot", _int(1, 8), 1, "Virtual CPUs.", "N"),
    Setting("cmdline", "boot", _text, "", "Extra kernel command-line arguments.", "ARGS"),
    Setting("connect", "boot", parse_connect, (), "Services outside the VM the app may "
            "reach, as NAME=HOST:PORT: inside the guest 127.0.0.1:PORT leads to HOST:PORT on "
            "the host, and $KRAIT_CONNECT_NAME says where. The guest reaches nothing else. "
            "At `krait run`/`serve`, --connect NAME=HOST:PORT points a declared NAME at "
            "another address (the guest's port stays). Where the VM runs is --on URI.",
            "NAME=HOST:PORT", repeatable=True),
    Setting("backend", "boot", _backend, None, "What runs the VM: qemu (krait starts QEMU "
            "itself), libvirt (a libvirtd, local or on another host: --on URI), or process "
            "(the app as a process of this host, for development). $KRAIT_BACKEND "
            "overrides it.", "NAME"),
)

BY_KEY = {s.key: s for s in SETTINGS}


def parse_setting(key: str, value: Any, where: str) -> Any:
    setting = BY_KEY[key]
    try:
        return setting.parse(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: `{key}` = {shown(value)}: {e}",
                          hint=f"{key}: {setting.help}") from None


def shown(value: Any, limit: int = 80) -> str:
    """A value as an error quotes it: its repr, cut short (a value may be megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
