"""``krait ps``: the instances, their state, ports, uptime and host memory."""

from __future__ import annotations

import json

import click
from rich.table import Table

from krait.cli._output import console, text
from krait.fleet.observe import clean_orphans, list_statuses
from krait.fleet.state import State


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@click.command("ps")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def command(as_json: bool) -> None:
    """List instances (from `krait run -d` and `krait serve`)."""
    clean_orphans()
    statuses = list_statuses()
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "IMAGE", "STATE", "PORTS", "UPTIME", "MEMORY", "OWNER", "BACKEND"):
        table.add_column(column)
    for s in statuses:
        state = str(s.state)
        if s.state == State.EXITED and s.exit_status is not None:
            state = f"exited ({s.exit_status})"
        if s.restarts:
            state += f", {s.restarts} restarts"
        ports = ", ".join(f"{s.address}:{h}->{g}" for h, g in s.ports) or "-"
        memory = f"{s.rss_mb:.0f} MB" if s.rss_mb is not None else "-"
        table.add_row(text(s.name), text(s.image.rsplit("/", 1)[-1]), state, text(ports),
                      _uptime(s.uptime_s), memory, text(s.owner), text(s.where))
    console.print(table)
