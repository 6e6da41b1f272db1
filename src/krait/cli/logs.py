"""``krait logs NAME [-f]``: an instance's console."""

from __future__ import annotations

import sys
import time

import click

from krait.fleet.instances import require
from krait.fleet.observe import EXITED, STALE, observe


@click.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until it ends.")
def command(name: str, follow: bool) -> None:
    """Show the console of instance NAME (earlier runs first, if it was restarted)."""
    folder = require(name)
    out = sys.stdout.buffer
    if folder.previous_console_log.exists():
        out.write(folder.previous_console_log.read_bytes())
    position = 0
    while True:
        current = folder.console_log
        if current.exists():
            size = current.stat().st_size
            if size < position:  # restarted: QEMU truncated its console file
                out.write(b"--- krait: restarted ---\n")
                position = 0
            with current.open("rb") as f:
                f.seek(position)
                chunk = f.read()
                position += len(chunk)
                out.write(chunk)
            out.flush()
        if not follow:
            return
        status = observe(folder, query_qmp=False)
        if status is None or status.state in (EXITED, STALE):
            return
        time.sleep(0.2)
