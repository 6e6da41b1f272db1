"""``krait inspect``: what is inside an image and what each part costs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
from rich.table import Table

from krait.cli._output import console, human_size
from krait.image.archive import open_image
from krait.image.cpio import read_cpio
from krait.image.layers import decompress


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
        click.echo(json.dumps({"digest": img.digest, **m}, indent=2))
        return
    s = m["settings"]
    console.print(f"[bold]{img.name}[/]  {image}  ({human_size(image.stat().st_size)})")
    console.print(f"digest    {img.digest}")
    console.print(f"entry     {s['entry']} ({s['kind']}), ports {s['ports'] or '-'}")
    console.print(f"python    {m['interpreter']['path']} {m['interpreter']['version']}")
    k = m["kernel"]
    console.print(f"kernel    {k['version']}, {k['format']}, {human_size(k['size'])} stored, "
                  f"{human_size(k['unpacked_size'])} unpacked, sha256 {k['sha256'][:16]}")
    console.print(f"boot      {m['boot']['memory']} MiB, {m['boot']['vcpus']} vCPU"
                  + (f", cmdline {m['boot']['cmdline']!r}" if m["boot"]["cmdline"] else ""))
    table = Table("layer", "stored", "unpacked", "files", "sha256", box=None)
    all_files = []
    for layer, blob in img.layer_blobs():
        table.add_row(layer["name"], human_size(layer["size"]), human_size(layer["cpio_size"]),
                      str(layer["files"]), layer["sha256"][:16])
        for entry in read_cpio(decompress(blob)):
            if entry.data and not entry.path.startswith("/dev"):
                all_files.append((layer["name"], entry))
    console.print(table)
    files = sorted(all_files, key=lambda f: -len(f[1].data))
    listing = Table("layer", "size", "path", box=None, title=None if show_files else
                    f"largest {min(top, len(files))} files")
    for layer_name, entry in files if show_files else files[:top]:
        listing.add_row(layer_name, human_size(len(entry.data)), entry.path)
    console.print(listing)
    executables = [e.path for _, e in all_files if stat.S_ISREG(e.mode) and e.mode & 0o111
                   and not e.path.endswith(".so") and ".so." not in e.path]
    console.print(f"modules   {len(m['modules'])}; executables: {', '.join(executables)}")
