"""``krait pull REF``: fetch an image from an OCI registry, every part checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from krait.cli._output import err_console
from krait.cli.run import trust_options
from krait.errors import ConfigError
from krait.image.registry import pull
from krait.image.signing import Trust
from krait.paths import atomic_file


def _check_target(target: Path) -> None:
    """Where the image goes can take a file: said before anything is downloaded."""
    if target.is_dir():
        raise ConfigError(f"-o {target} is a folder", hint=f"name a file: -o {target}/NAME.krait")
    if not target.parent.is_dir():
        raise ConfigError(f"-o {target}: {target.parent} is not a folder",
                          hint="make the folder first, or write the image elsewhere")


@click.command("pull")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write it (default: NAME.krait here).")
@trust_options
def command(ref: str, output: Path | None, verify: Path | None, digest: str | None) -> None:
    """Fetch the image at REF and write it as a .krait file."""
    if output is not None:
        _check_target(output)
    image = pull(ref, trust=Trust.from_flags(verify, digest))
    target = output or Path(f"{image.name}.krait")
    _check_target(target)
    try:
        with atomic_file(target, 0o644) as fd, open(fd, "wb", closefd=False) as out, \
                image.path.open("rb") as source:
            shutil.copyfileobj(source, out)
    except OSError as e:
        raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
    err_console.print(f"krait: pulled {image.name} (sha256:{image.digest[:16]}...)")
    click.echo(str(target))
