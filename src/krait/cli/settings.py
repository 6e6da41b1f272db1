"""``krait settings``: every app setting, where it applies, and its default."""

from __future__ import annotations

import click
from rich.table import Table

from krait.cli._output import console
from krait.config import SETTINGS


@click.command("settings")
def command() -> None:
    """List the settings of [tool.krait] / krait.toml (and their flags)."""
    table = Table("key", "when", "flag", "default", "meaning", box=None)
    for s in SETTINGS:
        when = "baked at build" if s.stage == "build" else "per boot"
        flag = f"krait {'build' if s.stage == 'build' else 'run'} {s.flag}"
        table.add_row(s.key, when, flag, repr(s.default) if s.default is not None else "-",
                      s.help)
    console.print(table)
