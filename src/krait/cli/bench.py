"""``krait bench``: boot time, memory and rebuild time, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from krait.bench.boot import bench_boot, bench_memory
from krait.bench.rebuild import bench_rebuild
from krait.bench.result import Result
from krait.cli._output import err_console
from krait.cli.kernel import ensure_kernel
from krait.vmm.accel import detect_accel


def _emit(result: Result, output: Path | None) -> None:
    data = result.to_dict()
    text = json.dumps(data, indent=2)
    if output:
        output.write_text(text + "\n")
        err_console.print(f"wrote {output}")
    click.echo(text)
    if result.samples:
        err_console.print(f"{result.benchmark} ({result.accelerator}): min {data['min']} "
                          f"median {data['median']} max {data['max']} {result.unit}, "
                          f"{data['runs']} runs")


_output = click.option("-o", "--output", type=click.Path(path_type=Path),
                       help="Also write the JSON here.")


@click.group("bench")
def command() -> None:
    """Measure boot time, memory and rebuild time."""


@command.command("boot")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-n", "--runs", default=10, show_default=True)
@click.option("-m", "--memory", type=int, help="Guest memory in MiB (default: the image's).")
@_output
def boot(image: Path, runs: int, memory: int | None, output: Path | None) -> None:
    """Time from starting the VM to its first HTTP 200."""
    _emit(bench_boot(image, runs, memory), output)


@command.command("memory")
@click.argument("image", type=click.Path(path_type=Path))
@_output
def memory(image: Path, output: Path | None) -> None:
    """The smallest guest memory at which the app serves, and QEMU's RSS."""
    _emit(bench_memory(image), output)


@command.command("rebuild")
@click.argument("app_dir", type=click.Path(path_type=Path), default=".")
@click.option("-n", "--runs", default=5, show_default=True)
@_output
def rebuild(app_dir: Path, runs: int, output: Path | None) -> None:
    """App-only rebuild time after a one-line change (warm cache)."""
    _emit(bench_rebuild(app_dir, ensure_kernel(), detect_accel().name, runs), output)
