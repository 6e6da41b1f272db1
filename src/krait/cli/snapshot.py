"""``krait snapshot ls|prune``: the snapshots `krait serve` wakes instances from."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.table import Table

from krait.cli._output import console, err_console, human_size, text
from krait.fleet import snapshot as snapshots


@click.group("snapshot")
def command() -> None:
    """List or remove the snapshots instances wake from (they are in krait's cache)."""


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """Each snapshot: its RAM file and device state, and when it was last woken from."""
    rows: list[dict[str, Any]] = []
    for snap in snapshots.all_snapshots():
        if not snap.exists():
            continue
        ram, state = snap.size()
        rows.append({"name": snap.name, "ram_bytes": ram, "state_bytes": state,
                     "last_used": snap.state.stat().st_mtime, "path": str(snap.state.parent)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("snapshot", "RAM file", "state", "last woken from", box=None)
    for row in rows:
        table.add_row(text(row["name"]), human_size(row["ram_bytes"]),
                      human_size(row["state_bytes"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(row["last_used"])))
    console.print(table)
    total = sum(r["ram_bytes"] + r["state_bytes"] for r in rows)
    err_console.print(f"{len(rows)} snapshots, {human_size(total)} in "
                      f"{snapshots.snapshots_dir()} (kept to {human_size(snapshots.max_bytes())}"
                      "; KRAIT_SNAPSHOT_MAX_MB changes it)")


@command.command("prune")
@click.option("--all", "everything", is_flag=True, help="Remove every snapshot.")
@click.option("--max-mb", type=int, help="Keep the most recently used within this many MB.")
def prune(everything: bool, max_mb: int | None) -> None:
    """Remove snapshots beyond the size cap (least recently used first), or all of them.
    An instance that finds none boots cold and saves a new one."""
    limit = 0 if everything else (max_mb * 2**20 if max_mb is not None else None)
    removed = snapshots.prune(limit)
    for snap in removed:
        console.print(text(f"removed {snap.name}"))
    err_console.print(f"{len(removed)} removed")
