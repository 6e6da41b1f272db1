"""``krait rm NAME``: remove a stopped instance's folder (its console log with it)."""

from __future__ import annotations

import click

from krait.fleet.instances import remove_instance, require


@click.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Stop it first if it is running.")
def command(names: tuple[str, ...], force: bool) -> None:
    """Remove instances NAMES."""
    for name in names:
        remove_instance(require(name), force)
        click.echo(name)
