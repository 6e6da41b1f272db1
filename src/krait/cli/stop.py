"""``krait stop NAME``: graceful shutdown (the app gets SIGTERM), hard after a timeout."""

from __future__ import annotations

import click

from krait.cli._output import err_console
from krait.fleet.instances import require, stop_instance


@click.command("stop")
@click.argument("names", nargs=-1, required=True)
@click.option("-t", "--time", "grace", default=10.0, show_default=True,
              help="Seconds to wait for a graceful shutdown before stopping hard.")
def command(names: tuple[str, ...], grace: float) -> None:
    """Stop instances NAMES."""
    for name in names:
        state = stop_instance(require(name), grace)
        err_console.print(f"krait: {name} {state}")
