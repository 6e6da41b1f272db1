"""``krait pull REF``: fetch an image from an OCI registry, every part checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from krait.cli._output import err_console
from krait.cli.run import trust_options
from krait.image.registry import pull
from krait.image.signing import Trust
from krait.paths import atomic_file


@click.command("pull")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write it (default: NAME.krait here).")
@trust_options
def command(ref: str, output: Path | None, verify: Path | None, digest: str | None) -> None:
    """Fetch the image at REF and write it as a .krait file."""
    image = pull(ref, trust=Trust.from_flags(verify, digest))
    target = output or Path(f"{image.name}.krait")
    with atomic_file(target, 0o644) as fd, open(fd, "wb", closefd=False) as out, \
            image.path.open("rb") as source:
        shutil.copyfileobj(source, out)
    err_console.print(f"krait: pulled {image.name} (sha256:{image.digest[:16]}...)")
    click.echo(str(target))
