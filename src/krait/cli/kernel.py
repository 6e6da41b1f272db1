"""``krait kernel``: build, show and locate krait's specialised kernel."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from krait.cli._output import console, err_console, human_size
from krait.kernel import (
    Kernel,
    build_kernel,
    count_build_steps,
    find_kernel,
    find_source,
    fragment_files,
    merged_config,
    patch_files,
)

# Roughly how many objects kbuild compiles for our configuration (for the progress bar).
EXPECTED_STEPS = 1300


def ensure_kernel() -> Kernel:
    """The cached kernel, building it first (with a progress bar) if needed."""
    cached = find_kernel()
    if cached:
        return cached
    err_console.print("building the kernel once (it is cached afterwards)...")
    with Progress(TextColumn("[bold]kernel"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("", total=EXPECTED_STEPS)

        def on_line(line: str) -> None:
            if count_build_steps(line):
                progress.update(task, advance=1, description=line.split()[-1][-40:])

        kernel = build_kernel(on_line)
    err_console.print(f"kernel {kernel.version} built: {kernel.image}")
    return kernel


@click.group("kernel")
def command() -> None:
    """Build and inspect the specialised kernel."""


@command.command("build")
def build() -> None:
    """Build the kernel from Debian's linux-source package (cached)."""
    kernel = ensure_kernel()
    console.print(f"{kernel.image}  ({human_size(kernel.image.stat().st_size)}, key {kernel.key})")


@command.command("info")
def info() -> None:
    """Where the kernel comes from and whether it is built."""
    tarball, version = find_source()
    kernel = find_kernel()
    table = Table(box=None, show_header=False)
    table.add_row("source", f"{tarball} ({version})")
    table.add_row("fragments", ", ".join(p.name for p in fragment_files()))
    table.add_row("patches", ", ".join(p.name for p in patch_files()) or "-")
    if kernel:
        table.add_row("built", f"{kernel.image} ({human_size(kernel.image.stat().st_size)})")
        table.add_row("version", kernel.version)
        table.add_row("key", kernel.key)
    else:
        table.add_row("built", "not yet: run `krait kernel build`")
    console.print(table)


@command.command("config")
def config() -> None:
    """Print the configuration fragments applied on top of allnoconfig."""
    click.echo(merged_config(), nl=False)
