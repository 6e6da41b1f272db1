"""An app's resolved configuration, and reading it from its folder."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from krait.config.settings import BY_KEY, SERVERS, SETTINGS, Service, parse_setting, shown
from krait.errors import ConfigError

MAX_CONFIG = 1 << 20


@dataclass(frozen=True)
class AppConfig:
    """Everything krait knows about one app. Frozen: derive a new one with ``replace``."""

    root: Path
    name: str
    entry: str
    kind: str = "main"
    server: str = "builtin"
    protocol: str | None = None  # None: http for asgi/wsgi, tcp for main (see serve_protocol)
    ports: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tls_cert: str | None = None
    ca: str | None = None
    tls_key: str | None = None
    dependencies: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    python: str | None = None
    sources: bool = False
    max_body: int = 1 << 20
    volumes: tuple[str, ...] = ()  # mount points the image expects volumes at
    memory: int | None = None  # None: what the image needs (measured at build time)
    vcpus: int = 1
    cmdline: str = ""
    connect: tuple[str, ...] = ()  # NAME=HOST:PORT (see settings.Service)
    backend: str | None = None  # None: krait's default (see vmm.backends)
    check: tuple[str, ...] | None = None  # None: the default for the app's kind
    # Not settings: what the app's files say besides its krait table, and what the
    # command line asked for.
    bake_tls_key: bool = False  # the user asked for tls_key in the image (see image.tls)
    config_file: str = "krait.toml"  # the file the settings came from
    requires_python: str | None = None  # [project].requires-python
    optional_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.entry.partition(":")[0]

    @property
    def callable(self) -> str:
        return self.entry.partition(":")[2]

    def build_settings(self) -> dict[str, Any]:
        """What is baked into the image (the manifest's ``settings``)."""
        return {s.field: _jsonable(getattr(self, s.field)) for s in SETTINGS
                if s.stage == "build" and s.key != "python"}

    def boot_defaults(self) -> dict[str, Any]:
        return {s.field: getattr(self, s.field) for s in SETTINGS if s.stage == "boot"}

    def to_json(self) -> str:
        data = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        data["root"] = str(self.root)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AppConfig:
        data = json.loads(text)
        data["root"] = Path(data["root"])
        for key in ("ports", "include", "ignore", "modules", "exclude", "dependencies",
                    "extras", "connect", "volumes"):
            data[key] = tuple(data[key])
        if data.get("check") is not None:
            data["check"] = tuple(data["check"])
        data["optional_dependencies"] = {k: tuple(v) for k, v in
                                         data["optional_dependencies"].items()}
        return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def find_config_file(root: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The file declaring the app, its krait table and its [project] table.

    krait.toml, or pyproject.toml's [tool.krait]: one of them, never both (which would
    win is not obvious). A krait.toml beside a pyproject.toml takes the [project] table
    (name, dependencies, requires-python) from there unless it has its own."""
    krait_toml = root / "krait.toml"
    pyproject = root / "pyproject.toml"
    project_data = _read_toml(pyproject) if pyproject.is_file() else {}
    table = _table(project_data, "tool", pyproject).get("krait")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: `tool.krait` must be a table",
                          hint="write the settings under a [tool.krait] header")
    project = _table(project_data, "project", pyproject)
    if krait_toml.is_file():
        if table is not None:
            raise ConfigError(f"{root}: both krait.toml and pyproject.toml's [tool.krait] "
                              "declare the app", hint="keep the settings in one of them")
        data = _read_toml(krait_toml)
        # A [tool.krait] table pasted from a pyproject.toml means the same in a krait.toml.
        nested = _table(data, "tool", krait_toml).get("krait")
        if isinstance(nested, dict) and set(data) <= {"tool", "project"}:
            return krait_toml, nested, _table(data, "project", krait_toml) or project
        return krait_toml, data, project
    if table is not None:
        return pyproject, table, project
    raise ConfigError(
        f"no krait configuration in {root}",
        hint="add a [tool.krait] table to pyproject.toml, or a krait.toml, with at least "
        "entry = 'module:callable' (see `krait settings`)",
    )


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: `{key}` must be a table, not {type(value).__name__}",
                          hint=f"write it as a [{key}] header")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG:
        raise ConfigError(f"{path}: over {MAX_CONFIG >> 20} MiB, too large for a configuration",
                          hint="settings are a few lines; keep data in files of their own")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})",
                          hint="TOML files are UTF-8; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load_app(root: Path, overrides: dict[str, Any] | None = None) -> AppConfig:
    """Read an app's settings from its folder; ``overrides`` (from flags) win."""
    root = root.resolve()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", hint="pass the app's folder")
    path, table, project = find_config_file(root)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key == "tool" and path.name == "krait.toml":
            raise ConfigError(f"{path}: a [tool.krait] table beside top-level settings",
                              hint="in a krait.toml the settings go at the top level "
                              "(entry = ...), or all of them under [tool.krait]")
        if key not in BY_KEY:
            close = difflib.get_close_matches(key, BY_KEY, n=1)
            raise ConfigError(
                f"{path}: unknown setting `{key}`",
                hint=f"did you mean `{close[0]}`?" if close
                else f"known settings: {', '.join(BY_KEY)}",
            )
        values[BY_KEY[key].field] = parse_setting(key, raw, str(path.name))
    for key in ("tls-cert", "tls-key"):
        name = values.get(BY_KEY[key].field)
        # The app folder is the build context: its files may name only files in it.
        if name is not None and (Path(name).is_absolute() or ".." in Path(name).parts):
            raise ConfigError(f"{path}: `{key}` = {shown(name)}: not a file in the app folder",
                              hint=f"copy the file into {root}, or name it on the command "
                              f"line (--{key} PATH)")
    from_command_line = set()
    for key, raw in (overrides or {}).items():
        key = key.replace("_", "-")
        if key not in BY_KEY:
            raise ConfigError(f"unknown setting `{key}`")
        if raw is not None:
            values[BY_KEY[key].field] = parse_setting(key, raw, "command line")
            from_command_line.add(key)
    for key in {"tls-cert", "tls-key"} & from_command_line:
        # A path on the command line is the user's own, from where they stand.
        values[BY_KEY[key].field] = os.path.abspath(values[BY_KEY[key].field])
    if "entry" not in values:
        raise ConfigError(f"{path}: `entry` is missing",
                          hint="set entry = 'module:callable', e.g. entry = 'app:app'")
    if "name" not in values:
        values["name"] = (parse_setting("name", project["name"], f"{path.name} [project]")
                          if project.get("name") is not None else
                          # A folder may be called anything; an image's name may not.
                          re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.")[:63]
                          or "app")
    if "dependencies" not in values and "dependencies" in project:
        values["dependencies"] = parse_setting("dependencies", project["dependencies"] or [],
                                               f"{path.name} [project]")
    optional = project.get("optional-dependencies") or {}
    if not isinstance(optional, dict):
        raise ConfigError(f"{path.name}: [project.optional-dependencies] must be a table")
    optional_deps = {group: parse_setting("dependencies", reqs or [],
                                          f"{path.name} [project.optional-dependencies]")
                     for group, reqs in optional.items()}
    unknown_extras = [e for e in values.get("extras", ()) if e not in optional_deps]
    if unknown_extras:
        raise ConfigError(f"{path.name}: extras = {list(unknown_extras)}: no such group in "
                          "[project.optional-dependencies]",
                          hint=f"groups there: {', '.join(optional_deps) or 'none'}")
    kind = values.get("kind", "main")
    server = values.get("server", "builtin")
    if kind not in SERVERS[server] and not (kind == "main" and server == "builtin"):
        raise ConfigError(f"{path}: server = {server!r} cannot serve kind = {kind!r}",
                          hint=f"{server} serves {' and '.join(SERVERS[server])} apps")
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        raise ConfigError(f"{path}: `tls-cert` and `tls-key` go together",
                          hint="name both files (or build with --self-signed)")
    if values.get("ports") is None:
        values["ports"] = (8080,) if kind in ("asgi", "wsgi") else ()
    taken = [s for s in map(Service.parse, values.get("connect", ()))
             if s.guest_port in values["ports"]]
    if taken:
        raise ConfigError(f"{path}: connect = {str(taken[0])!r}: the app itself listens on "
                          f"port {taken[0].guest_port}",
                          hint="inside the guest a service keeps its port; the app's ports "
                          "and the services' ports must differ")
    requires = project.get("requires-python")
    return AppConfig(root=root, **values, config_file=path.name,
                     bake_tls_key="tls-key" in from_command_line,
                     requires_python=str(requires) if requires else None,
                     optional_dependencies=optional_deps)
