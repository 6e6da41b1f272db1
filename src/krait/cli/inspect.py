"""``krait inspect``: what is inside an image and what each part costs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
from rich.table import Table

from krait.cli._output import console, human_size, markup_safe, text, visible
from krait.image.archive import open_image


@click.command("inspect")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--files", "show_files", is_flag=True, help="List every file of every layer.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option("--top", default=10, show_default=True, help="How many of the largest files.")
def command(image: Path, show_files: bool, as_json: bool, top: int) -> None:
    """Show IMAGE's layers, files, sizes, modules, kernel and digests."""
    img = open_image(image)
    m = img.manifest
    if as_json:
        click.echo(json.dumps({"digest": img.digest, **json.loads(m.to_json())}, indent=2))
        return
    # Everything an image says is printed as text (krait.cli._output), never as markup.
    s = m.settings
    console.print(f"[bold]{markup_safe(img.name)}[/]  {markup_safe(image)}  "
                  f"({human_size(image.stat().st_size)})")
    signed = "signed" if img.signed else "not signed"
    lines = [
        f"digest    sha256:{img.digest} ({signed}; pin it with --digest)",
        f"entry     {s['entry']} ({s['kind']}), ports {s.get('ports') or '-'}",
        f"python    {m.interpreter['path']} {m.interpreter['version']}",
        f"kernel    {m.kernel_identity.version}, {m.kernel.format}, "
        f"{human_size(m.kernel.size)} stored, {human_size(m.kernel.unpacked_size)} unpacked, "
        f"sha256 {m.kernel.sha256[:16]}",
        f"boot      {m.boot.memory} MiB, {m.boot.vcpus} vCPU"
        + (f", cmdline {m.boot.cmdline!r}" if m.boot.cmdline else ""),
        f"memory    needs at least {m.memory.minimum_mib} MiB: {m.memory.explain()}"]
    if m.boot.connect:
        lines.append(f"connect   {', '.join(m.boot.connect)}")
    if m.trust:
        lines.append(f"trusts    {m.trust.source} (sha256 {m.trust.sha256[:16]}) at "
                     f"{m.trust.path}")
    for line in lines:
        console.print(text(line))
    table = Table("layer", "mount", "stored", "unpacked", "files", "sha256", box=None)
    for layer in m.layers:
        table.add_row(text(layer.name), text(layer.mount), human_size(layer.size),
                      human_size(layer.unpacked_size), str(layer.files), layer.sha256[:16])
    console.print(table)
    everything = img.files()
    files = sorted((f for f in everything if stat.S_ISREG(f.mode)), key=lambda f: -f.size)
    if show_files:
        # Plain lines, not a table: an image may list a hundred thousand files, and rich
        # lays a table out whole in memory.
        click.echo("layer           size  path")
        for start in range(0, len(files), 1000):
            click.echo("\n".join(f"{visible(f.layer):<9} {human_size(f.size):>10}  "
                                 f"{visible(f.path)}" for f in files[start:start + 1000]))
    else:
        listing = Table("layer", "size", "path", box=None,
                        title=f"largest {min(top, len(files))} files")
        for f in files[:top]:
            listing.add_row(text(f.layer), human_size(f.size), text(f.path))
        console.print(listing)
    runnable = [f"{f.path} ({f.runs})" for f in everything if f.runs]
    console.print(text(f"modules   {len(m.modules)}; what can be run: {', '.join(runnable)}"))
