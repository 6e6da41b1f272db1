"""``krait push IMAGE REF``: store an image in an OCI registry."""

from __future__ import annotations

from pathlib import Path

import click

from krait.cli._output import err_console
from krait.image.archive import open_image
from krait.image.registry import push


@click.command("push")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("ref")
def command(image: Path, ref: str) -> None:
    """Store IMAGE in a registry at REF (HOST[:PORT]/NAME[:TAG]), one blob per part."""
    img = open_image(image)
    digest = push(img, ref)
    err_console.print(f"krait: pushed {img.name} (sha256:{img.digest[:16]}...) to {ref}")
    click.echo(f"{ref.partition('@')[0]}@{digest}" if digest else ref)
