"""``krait replace NAME IMAGE``: swap a running `krait serve` to a new image, no downtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from krait.cli._output import err_console
from krait.errors import ConfigError
from krait.fleet.serve import control_request


@click.command("replace")
@click.argument("name")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def command(name: str, image: Path) -> None:
    """Boot IMAGE for serve NAME, switch new connections to it, let old ones finish,
    then stop the old instances."""
    answer = asyncio.run(control_request(name, {"op": "replace", "image": str(image.resolve())}))
    if not answer.get("ok"):
        raise ConfigError(f"replace failed: {answer.get('error')}")
    if answer.get("changed"):
        err_console.print(f"krait: {name} now serves {image} (generation {answer['generation']})")
    else:
        err_console.print(f"krait: {name} already serves that image")
