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
PROTOCOLS = ("http", "tcp")  # what `krait serve` speaks in front of an app
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


def _protocol(value: Any) -> str:
    if value not in PROTOCOLS:
        raise ValueError(f"expected one of {', '.join(PROTOCOLS)}")
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


LOOPBACK = "127.0.0.1"
# Where declared host names lead inside the guest: one loopback address per name, from
# 127.77.0.1 up in the names' order, written to the image's /etc/hosts at build time.
NAMED_NET = (127, 77)
MAX_NAMES = 250
DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_NAME = r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*"
_IP = r"[0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\]"
_KEY = r"[a-z][a-z0-9_]{0,31}"


def _is_ip(host: str) -> bool:
    return re.fullmatch(_IP, host) is not None


@dataclass(frozen=True)
class Service:
    """A service outside the VM that the app may reach (``connect``).

    Inside the guest it is guest_host:guest_port, and that leads to host:port as seen
    from the host. guest_host is 127.0.0.1 for a service declared by address
    (``db=127.0.0.1:5432``), or the real host name for one declared by name
    (``db.prod:5432``, ``https://api.example.com``, ``cache=redis.prod:6379``), so the app
    uses the name it knows and TLS checks see it. ``name`` is what ``--connect`` points
    elsewhere: the key before '=', or the host name itself."""

    name: str
    host: str
    port: int
    guest_port: int
    guest_host: str = LOOPBACK

    @classmethod
    def parse(cls, text: str) -> Service:
        """NAME=HOST:PORT, HOST:PORT or SCHEME://HOST[:PORT] (http, https)."""
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if sep:
            return cls._parse_url(text, scheme.lower(), rest)
        key, sep, address = text.partition("=")
        host, port = _host_port(text, address if sep else text)
        if not sep:
            if _is_ip(host):
                raise ValueError(f"{text!r}: an address needs a name the app knows it by: "
                                 f"NAME={text}")
            return cls(host.lower(), host, port, port, host.lower())
        key = key.strip().lower()
        if "." in key and re.fullmatch(_HOST_NAME, key):
            # --connect api.example.com=127.0.0.1:8443: a declared name pointed elsewhere
            return cls(key, host, port, port, key)
        if not re.fullmatch(_KEY, key):
            raise ValueError(f"{text!r}: a name is a letter, then letters, digits or '_' "
                             "(or a host name)")
        by_name = not _is_ip(host) and host.lower() != "localhost"
        return cls(key, host, port, port, host.lower() if by_name else LOOPBACK)

    @classmethod
    def _parse_url(cls, text: str, scheme: str, rest: str) -> Service:
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{text!r}: a URL here is http:// or https://; for other "
                             "services give HOST:PORT")
        authority, _, path = rest.partition("/")
        if path or "@" in authority or "?" in authority or "#" in authority:
            raise ValueError(f"{text!r}: give the service, not a resource: "
                             f"{scheme}://HOST[:PORT]")
        if not re.search(r":[0-9]+$", authority):
            authority += f":{DEFAULT_PORTS[scheme]}"
        host, port = _host_port(text, authority)
        if _is_ip(host):
            raise ValueError(f"{text!r}: by name only; for an address give NAME=HOST:PORT")
        return cls(host.lower(), host, port, port, host.lower())

    @property
    def by_name(self) -> bool:
        return self.guest_host != LOOPBACK

    @property
    def env_var(self) -> str | None:
        """$KRAIT_CONNECT_NAME for a service with a NAME= key; None for one that the app
        reaches by its host name."""
        from krait.guest.tunnel import service_env

        return service_env(self.name) if re.fullmatch(_KEY, self.name) else None

    @property
    def guest_address(self) -> str:
        return f"{self.guest_host}:{self.guest_port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.by_name and self.name == self.guest_host and self.host.lower() == self.name:
            return f"{host}:{self.port}"
        return f"{self.name}={host}:{self.port}"


def _host_port(text: str, address: str) -> tuple[str, int]:
    host, colon, port = address.strip().rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT, NAME=HOST:PORT or "
                         "https://HOST, e.g. db.prod:5432 or db=127.0.0.1:5432")
    if not (re.fullmatch(_HOST_NAME, host) or re.fullmatch(_IP, host)):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    return host.strip("[]"), _int(1, 65535)(int(port))


def named_addresses(services: tuple[Service, ...] | list[Service]) -> dict[str, str]:
    """The guest's loopback address of each host name the services are reached by: what
    the image's /etc/hosts says and where the guest's end of the tunnel listens."""
    names = sorted({s.guest_host for s in services if s.by_name})
    if len(names) > MAX_NAMES:
        raise ValueError(f"{len(names)} host names: at most {MAX_NAMES}")
    return {n: f"{NAMED_NET[0]}.{NAMED_NET[1]}.0.{i}" for i, n in enumerate(names, 1)}


def parse_connect(value: Any) -> tuple[str, ...]:
    """Services, each name and each place in the guest once."""
    services = [Service.parse(v) for v in _strings(value)]
    for what, key in (("name", lambda s: s.name), ("place in the guest",
                                                   lambda s: s.guest_address)):
        seen = [key(s) for s in services]
        twice = sorted({str(v) for v in seen if seen.count(v) > 1})
        if twice:
            raise ValueError(f"{what} {', '.join(twice)} given twice")
    named_addresses(services)
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
    Setting("protocol", "build", _protocol, None, "What `krait serve` speaks in front of "
            "the app: 'http' (it reads each request head itself, answers 400/408/431 for "
            "bad or slow ones, and balances requests, not connections) or 'tcp' (bytes "
            "both ways, for apps that do not speak HTTP/1.1). Default: http for asgi/wsgi "
            "apps, tcp for main.", "PROTOCOL"),
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
    Setting("ca", "build", _str, None, "The certificates the app's TLS clients trust, as "
            "one PEM file (a file in the app folder, or any file given on the command "
            "line), baked in instead of the default: certifi's bundle if the app has "
            "certifi, else this machine's ca-certificates (if the app uses ssl).", "PATH"),
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
            "reach. By name: HOST:PORT or https://HOST (the app uses that name and port; "
            "the host resolves it at each connection). By address: NAME=HOST:PORT (inside "
            "the guest 127.0.0.1:PORT; $KRAIT_CONNECT_NAME says where). The guest resolves "
            "exactly these names and reaches nothing else. At `krait run`/`serve`, "
            "--connect NAME=HOST:PORT points a declared NAME (or host name) at another "
            "address; the guest's side stays. Where the VM runs is --on URI.",
            "SERVICE", repeatable=True),
    Setting("backend", "boot", _backend, None, "What runs the VM: qemu (krait starts QEMU "
            "itself), libvirt (a libvirtd, local or on another host: --on URI), or process "
            "(the app as a process of this host, for development). $KRAIT_BACKEND "
            "overrides it.", "NAME"),
)

BY_KEY = {s.key: s for s in SETTINGS}


def serve_protocol(kind: str, protocol: str | None) -> str:
    """What `krait serve` speaks in front of an app: its `protocol`, else HTTP for the
    kinds krait serves over HTTP (a main app may speak anything)."""
    if protocol is not None:
        return protocol
    return "http" if kind in ("asgi", "wsgi") else "tcp"


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
