"""``krait logs NAME [-f]``: an instance's console."""

from __future__ import annotations

import sys
import time

import click

from krait.fleet.instances import require
from krait.fleet.observe import EXITED, STALE, observe
from krait.vmm.console import ConsoleLog


@click.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until it ends.")
def command(name: str, follow: bool) -> None:
    """Show the console of instance NAME (earlier runs first, if it was restarted; the
    log keeps the last 8-16 MiB)."""
    folder = require(name)
    out = sys.stdout.buffer
    current, rotated = folder.console_log, ConsoleLog.rotated(folder.console_log)
    if rotated.exists():
        out.write(rotated.read_bytes())
    position = 0
    while True:
        if current.exists():
            if current.stat().st_size < position:  # rotated: finish the old part first
                with rotated.open("rb") as f:
                    f.seek(position)
                    out.write(f.read())
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
