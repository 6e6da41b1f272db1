"""``krait volume create FILE``: a data disk for ``krait run --volume``."""

from __future__ import annotations

from pathlib import Path

import click

from krait.cli._output import err_console
from krait.config.settings import parse_size
from krait.errors import ConfigError
from krait.vmm import volumes


@click.group("volume")
def command() -> None:
    """Data volumes: disks that outlive the VMs they are attached to."""


@command.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--size", default="256M", show_default=True, help="Its size, e.g. 64M, 2G.")
@click.option("--raw", is_flag=True, help="No file system: the app owns the blocks "
              "(attach it as FILE:NAME; the app finds it in $KRAIT_VOLUME_NAME).")
@click.option("--from", "source", type=click.Path(path_type=Path),
              help="Fill the ext4 volume with a copy of this folder (mke2fs -d).")
def create(path: Path, size: str, raw: bool, source: Path | None) -> None:
    """Make a volume at PATH: ext4 (made without root), or raw."""
    try:
        nbytes = parse_size(size, volumes.MAX_SIZE)
    except ValueError as e:
        raise ConfigError(f"--size {size}: {e}") from None
    if raw and source:
        raise ConfigError("--raw has no file system to copy --from into")
    volumes.create(path, nbytes, raw, source)
    kind = "raw" if raw else "ext4"
    err_console.print(f"krait: made {path} ({kind}, {size}); attach it with "
                      f"`krait run IMAGE --volume {path}:{'NAME' if raw else '/data'}`")
