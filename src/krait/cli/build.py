"""``krait build``: app folder -> NAME.krait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from krait.cli._output import console, err_console, human_size
from krait.cli._settings_flags import overrides, setting_options
from krait.cli.kernel import ensure_kernel
from krait.config import load_app
from krait.image.build import build_image
from krait.image.tls import with_self_signed
from krait.kernel import custom_kernel


@click.command("build")
@click.argument("app_dir", default=".", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write the image "
              "(default: NAME.krait in the app folder).")
@click.option("--kernel", "kernel_path", type=click.Path(path_type=Path),
              help="Boot this kernel (bzImage or vmlinux) instead of krait's own.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image path.")
@click.option("--self-signed", is_flag=True, help="Bake in a self-signed TLS certificate for "
              "local use (made with openssl; kept in tls-cert/tls-key or .krait-tls/).")
@setting_options("build")
def command(app_dir: Path, output: Path | None, kernel_path: Path | None, quiet: bool,
            self_signed: bool, **settings: Any) -> None:
    """Build a unikernel image from the app in APP_DIR."""
    app = load_app(app_dir, overrides(settings))
    if self_signed:
        app = with_self_signed(app)
    kernel = custom_kernel(kernel_path) if kernel_path else ensure_kernel()
    with err_console.status("building") as status:
        result = build_image(app, kernel, output, step=lambda s: status.update(s))
    if quiet:
        click.echo(result.path)
        return
    m = result.manifest
    table = Table("part", "stored", "unpacked", "files", "sha256", box=None)
    table.add_row("kernel", human_size(m["kernel"]["size"]),
                  human_size(m["kernel"]["unpacked_size"]), "", m["kernel"]["sha256"][:16])
    for layer in m["layers"]:
        note = " (cached)" if layer["name"] in result.cached_layers else ""
        table.add_row(f"{layer['name']}{note}", human_size(layer["size"]),
                      human_size(layer["cpio_size"]), str(layer["files"]), layer["sha256"][:16])
    console.print(table)
    size = result.path.stat().st_size
    console.print(f"[bold]{result.path}[/]  {human_size(size)}, {len(m['modules'])} modules, "
                  f"digest {result.digest[:16]}, built in {result.seconds:.2f}s")
