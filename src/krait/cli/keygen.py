"""``krait keygen FILE``: an ed25519 key pair for signing images."""

from __future__ import annotations

from pathlib import Path

import click

from krait.cli._output import err_console
from krait.image.signing import generate


@click.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def command(path: Path) -> None:
    """Write a new signing key to PATH (0600) and its public key to PATH.pub.

    Sign with `krait build --sign PATH`; boot only what it signed with
    `krait run/serve --verify PATH.pub`."""
    public = generate(path)
    err_console.print(f"krait: wrote {path} (private: keep it out of the app folder and "
                      f"of version control) and {public}")
