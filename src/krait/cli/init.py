"""``krait init [DIR] --template T``: a runnable app to start from."""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from krait.cli._output import err_console
from krait.errors import ConfigError

TEMPLATES = ("asgi", "wsgi", "main", "website")
# Text files name the app; "{name}" is all that is filled in (no format(): code has braces).
_NAMED = (".toml", ".html")


def _walk(folder: Traversable, rel: str = "") -> list[tuple[str, bytes]]:
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name == "__pycache__":
            continue
        path = f"{rel}{entry.name}"
        out += _walk(entry, path + "/") if entry.is_dir() else [(path, entry.read_bytes())]
    return out


@click.command("init")
@click.argument("folder", default=".", type=click.Path(path_type=Path))
@click.option("-t", "--template", type=click.Choice(TEMPLATES), default="asgi",
              show_default=True, help="What kind of app: an ASGI or WSGI service, a job "
              "(main), or a static website.")
def command(folder: Path, template: str) -> None:
    """Write a runnable app into FOLDER: its code, a pyproject.toml with its [tool.krait]
    table, and a test. `krait build FOLDER && krait run FOLDER/NAME.krait` works on it."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-.")[:63] or "app"
    items = _walk(files("krait") / "templates" / template)
    taken = [rel for rel, _ in items if (folder / rel).exists()]
    taken += [f for f in ("pyproject.toml", "krait.toml") if (folder / f).exists()]
    if taken:
        raise ConfigError(f"{folder}: {sorted(set(taken))[0]} exists already",
                          hint="pick an empty or new folder: `krait init NEW_FOLDER`")
    for rel, data in items:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in _NAMED:
            data = data.decode().replace("{name}", name).encode()
        target.write_bytes(data)
    ports = "" if template == "main" else " -p 8080:8080"
    err_console.print(f"krait: wrote the {template} template, an app named {name}, in {folder}\n"
                      f"  krait build {folder}\n"
                      f"  krait run {folder / (name + '.krait')}{ports}\n"
                      f"  (cd {folder} && python3 -m pytest)   # its test, no VM")
