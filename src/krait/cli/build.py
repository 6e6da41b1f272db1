"""``krait build``: app folder -> NAME.krait."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from krait.cli._output import console, err_console, human_size, text
from krait.cli._settings_flags import overrides, setting_options
from krait.cli.kernel import ensure_kernel
from krait.config import load_app
from krait.errors import ConfigError
from krait.image.lock import LockMode
from krait.image.signing import load_private_key
from krait.image.tls import with_self_signed
from krait.kernel import custom_kernel
from krait.vmm.check import build_checked


@click.command("build")
@click.argument("app_dir", default=".", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write the image "
              "(default: NAME.krait in the app folder).")
@click.option("--kernel", "kernel_path", type=click.Path(path_type=Path),
              help="Boot this kernel (bzImage or vmlinux) instead of krait's own.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image path.")
@click.option("--self-signed", is_flag=True, help="Bake in a self-signed TLS certificate for "
              "local use (made with openssl; kept in tls-cert/tls-key or .krait-tls/).")
@click.option("--bake-tls-key", is_flag=True, help="Bake the private key the app's settings "
              "name (tls-key) into the image, which is then 0600 (one given with --tls-key "
              "or made by --self-signed needs no more asking).")
@click.option("--locked", is_flag=True, help="Refuse to build if krait.lock is missing or out "
              "of date with the declared dependencies (for CI).")
@click.option("--upgrade", is_flag=True, help="Resolve the dependencies again to the newest "
              "versions they allow, and rewrite krait.lock.")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path), metavar="KEY",
              help="Sign the image with this ed25519 private key (`krait keygen` makes one); "
              "`krait run --verify KEY.pub` then checks it.")
@click.option("--no-check", is_flag=True, help="Do not run the image once to check that it "
              "serves (see the check setting).")
@setting_options("build")
def command(app_dir: Path, output: Path | None, kernel_path: Path | None, quiet: bool,
            self_signed: bool, bake_tls_key: bool, locked: bool, upgrade: bool,
            sign_key: Path | None, no_check: bool, **settings: Any) -> None:
    """Build a unikernel image from the app in APP_DIR.

    The app's declared dependencies are resolved into krait.lock (once; kept up to date
    after) and installed in krait's cache; the image holds only what the app imports."""
    if locked and upgrade:
        raise ConfigError("--locked and --upgrade contradict each other", hint="pick one")
    mode = LockMode.LOCKED if locked else LockMode.UPGRADE if upgrade else LockMode.AUTO
    key = load_private_key(sign_key) if sign_key else None  # a bad key fails before the build
    app = load_app(app_dir, overrides(settings))
    if bake_tls_key:
        app = dataclasses.replace(app, bake_tls_key=True)
    if self_signed:
        app = with_self_signed(app)
    kernel = custom_kernel(kernel_path) if kernel_path else ensure_kernel()
    with err_console.status("building") as status:
        result = build_checked(app, kernel, output, lambda s: status.update(escape(s)),
                               not no_check, mode, key)
    if quiet:
        click.echo(result.path)
        return
    m = result.manifest
    table = Table("part", "stored", "unpacked", "files", "sha256", box=None)
    for part in m.parts:
        note = " (cached)" if part.name in result.cached_layers else ""
        table.add_row(f"{part.name}{note}", human_size(part.size),
                      human_size(part.unpacked_size), str(part.files or ""), part.sha256[:16])
    console.print(table)
    size = result.path.stat().st_size
    console.print(f"[bold]{escape(str(result.path))}[/]  {human_size(size)}, "
                  f"{len(m.modules)} modules, digest {result.digest[:16]}"
                  f"{' (signed)' if key else ''}, "
                  f"built in {result.seconds:.2f}s")
    for note in result.notes:  # they name the app's files: text, not markup
        console.print(text(note, style="dim"))
    console.print(f"memory    needs at least {m.memory.minimum_mib} MiB "
                  f"({m.memory.explain()}); boots with {m.boot.memory} MiB unless --memory "
                  "says otherwise")
