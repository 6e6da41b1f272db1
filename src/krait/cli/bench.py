"""``krait bench``: boot time, memory and rebuild time, as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from krait.bench import compare, timeline
from krait.bench.boot import bench_boot, bench_memory
from krait.bench.rebuild import bench_rebuild
from krait.bench.result import Result
from krait.cli._output import err_console, text
from krait.cli.kernel import ensure_kernel
from krait.errors import ConfigError
from krait.vmm.accel import detect_accel


def _write_json(doc: dict[str, Any], output: Path | None) -> None:
    """The result on stdout, and in ``output`` if given."""
    text = json.dumps(doc, indent=2)
    if output:
        output.write_text(text + "\n")
        err_console.print(f"wrote {output}")
    click.echo(text)


def _emit(result: Result, output: Path | None) -> None:
    data = result.to_dict()
    _write_json(data, output)
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
@click.option("--timeline", "timeline_png", type=click.Path(path_type=Path), default=None,
              is_flag=False, flag_value=Path("boot-timeline.png"),
              help="Also show where the time goes, step by step (from the guest's own "
              "timestamps), and draw it to this PNG (default boot-timeline.png).")
@click.option("--wall", is_flag=True,
              help="Time `krait run IMAGE` as a user starts it, to its first 200, in pairs "
              "with the guest's own boot: the difference is krait's start-up.")
@_output
def boot(image: Path, runs: int, memory: int | None, timeline_png: Path | None,
         wall: bool, output: Path | None) -> None:
    """Time from starting the VM to its first HTTP 200."""
    if wall:
        from krait.bench.boot import bench_wall

        if memory is not None or timeline_png is not None:
            raise ConfigError("--wall runs the image as `krait run` does: no --memory or "
                              "--timeline with it")
        result = bench_wall(image, runs)
        _emit(result, output)
        err_console.print(f"guest boot to first 200: median "
                          f"{result.extra['guest_boot_median_s']} s; krait's own start-up: "
                          f"{result.extra['krait_overhead_median_s']} s")
        return
    result = bench_boot(image, runs, memory)
    steps = timeline.rows(result.extra["timelines"])
    result.extra["timeline"] = steps
    _emit(result, output)
    if timeline_png is not None:
        table = Table("step", "takes", "ends at", box=None)
        for row in steps:
            table.add_row(str(row["what"]), f"{row['takes_s']:.3f} s", f"{row['ends_s']:.3f} s")
        err_console.print(table)
        title = f"{image.name}: boot to first answer ({result.accelerator}, {runs} runs)"
        drawn = timeline.plot(steps, timeline_png, title)
        err_console.print(f"wrote {drawn}" if drawn else
                          "no chart: matplotlib is not installed (pip install matplotlib)")


@command.command("ab")
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("-n", "--runs", default=10, show_default=True, help="Boots of each image.")
@click.option("-m", "--memory", type=int, help="Guest memory in MiB (default: each image's).")
@click.option("--serve", "serve_seconds", type=int, default=None, metavar="SECONDS",
              help="Compare requests/s through `krait serve` (wrk for SECONDS, 16 "
              "connections, one instance) instead of boot times.")
@_output
def ab(image_a: Path, image_b: Path, runs: int, memory: int | None,
       serve_seconds: int | None, output: Path | None) -> None:
    """Interleaved boots of two images, and whether the difference is real."""
    from krait.bench.ab import bench_ab
    from krait.bench.boot import boot_once

    def boot_seconds(image: Path) -> float:
        return float(boot_once(image, memory)["seconds"])  # type: ignore[arg-type]

    def progress(message: str) -> None:
        err_console.print(message, highlight=False)

    if serve_seconds is None:
        doc = bench_ab(image_a, image_b, boot_seconds, runs, progress,
                       accelerator=detect_accel().name)
    else:
        from krait.bench.serve import requests_per_second

        doc = bench_ab(image_a, image_b,
                       lambda image: requests_per_second(image, memory, serve_seconds),
                       runs, progress, accelerator=detect_accel().name,
                       what="requests-per-second-through-krait-serve", unit="rps",
                       higher_is_better=True)
    _write_json(doc, output)
    unit = doc["unit"]
    err_console.print(f"A median {doc['a']['median']:g} {unit}, B median "
                      f"{doc['b']['median']:g} {unit} ({doc['accelerator']}): B/A "
                      f"{doc['b_over_a']}, p "
                      f"{doc['p_value']}: {doc['verdict']}")


@command.command("memory")
@click.argument("image", type=click.Path(path_type=Path))
@_output
def memory(image: Path, output: Path | None) -> None:
    """The smallest guest memory at which the app serves, and QEMU's RSS."""
    _emit(bench_memory(image), output)


@command.command("rebuild")
@click.argument("app_dir", type=click.Path(path_type=Path), default=".")
@click.option("-n", "--runs", default=5, show_default=True)
@click.option("--dependency-runs", type=click.IntRange(0, 10), default=None,
              help="Builds with one more dependency declared (default: as many as --runs).")
@_output
def rebuild(app_dir: Path, runs: int, dependency_runs: int | None, output: Path | None) -> None:
    """Rebuild time with a warm cache: after a one-line change of the app, and after one
    small dependency is added to what it declares."""
    result = bench_rebuild(app_dir, ensure_kernel(), detect_accel().name, runs, dependency_runs)
    _emit(result, output)
    added = result.extra["one_dependency_added"]
    if added["samples"]:
        err_console.print(f"one dependency added: min {added['min']} median {added['median']} "
                          f"max {added['max']} s, {len(added['samples'])} runs")


@command.command("edit")
@click.option("-n", "--runs", default=5, show_default=True)
@_output
def edit(runs: int, output: Path | None) -> None:
    """From a one-line change of an app to its first answer with the change: with
    `krait run --target process --watch`, and with a rebuild and a full boot."""
    from krait.bench.edit import bench_edit

    result = bench_edit(ensure_kernel(), detect_accel().name, runs)
    _emit(result, output)
    booted = result.extra["rebuild_and_boot"]
    err_console.print(f"rebuild and boot: min {booted['min']} median {booted['median']} max "
                      f"{booted['max']} s; boot/process median "
                      f"{result.extra['boot_over_process_median']}")


@command.command("volume")
@click.option("-n", "--writes", default=200, show_default=True,
              help="Random 4 KiB writes, each fsync'ed.")
@_output
def volume(writes: int, output: Path | None) -> None:
    """Random 4 KiB write + fsync latency on a data volume (the guest's view), against
    the same loop on a host file beside it."""
    from krait.bench.volume import bench_volume

    result = bench_volume(ensure_kernel(), detect_accel().name, writes)
    _emit(result, output)
    host = result.extra["host_file"]
    ratio = result.extra["guest_over_host_median"]
    err_console.print(f"host file: min {host['min']} median {host['median']} max "
                      f"{host['max']} ms; guest/host median {ratio}")


@command.command("connect")
@click.option("--bulk", "bulk_mib", default=100, show_default=True, help="MiB per download.")
@click.option("-n", "--runs", default=3, show_default=True, help="Bulk downloads.")
@click.option("--pings", default=1000, show_default=True, help="Small round trips.")
@click.option("--parallel", default=64, show_default=True, help="Connections at once.")
@_output
def connect(bulk_mib: int, runs: int, pings: int, parallel: int, output: Path | None) -> None:
    """The tunnel to declared services as a network path: one bulk download (MB/s),
    small round trips (p50/p99), many connections at once; against the host."""
    from krait.bench.connect import bench_connect

    result = bench_connect(ensure_kernel(), detect_accel().name, bulk_mib, runs, pings,
                           parallel)
    _emit(result, output)
    for side in ("guest", "host"):
        got = result.extra[side]
        err_console.print(f"{side}: bulk median {got['bulk_mb_s']['median']:.1f} MB/s, round "
                          f"trip mean {got['round_trip_ms']['mean']} ms, p50 "
                          f"{got['round_trip_ms']['p50']} ms p99 "
                          f"{got['round_trip_ms']['p99']} ms, {parallel} at once: "
                          f"{got['parallel']['connections_done']} done, slowest "
                          f"{got['parallel'].get('slowest_mb_s')} MB/s")


@command.command("compare")
@click.argument("app_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-n", "--runs", default=3, show_default=True, help="Boots per variant.")
@click.option("-m", "--memory", default=256, show_default=True,
              help="Guest memory in MiB for both VMs (and the container's limit).")
@click.option("--only", default=",".join(compare.VARIANTS), show_default=True,
              help="Comma-separated variants to run.")
@click.option("--wrk-seconds", default=5, show_default=True, help="Length of the wrk load.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("docs/bench"),
              show_default=True,
              help="Where compare-<app>.json and compare-<apps>.md/.png go.")
def compare_cmd(app_dirs: tuple[Path, ...], runs: int, memory: int, only: str,
                wrk_seconds: int, out_dir: Path) -> None:
    """The same app as a process, a container, a general-purpose VM and a unikernel.

    Give several app folders to measure them in one run and see them side by side
    (default: examples/hello)."""
    variants = [v.strip() for v in only.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(compare.VARIANTS))
    if unknown:
        raise ConfigError(f"unknown variant(s): {', '.join(unknown)}",
                          hint=f"choose from {', '.join(compare.VARIANTS)}")
    err_console.print(detect_accel().reason)
    settings = compare.Settings(runs=runs, memory_mib=memory, wrk_seconds=wrk_seconds)
    if "unikernel" in variants:
        ensure_kernel()  # with a progress bar, the first time
    docs = compare.run_apps(app_dirs or (Path("examples/hello"),), settings, variants,
                            progress=lambda m: err_console.print(m, highlight=False))
    paths = compare.write_outputs(docs, out_dir)
    click.echo(compare.page(docs))
    for path in [*paths["json"], paths["md"]]:
        err_console.print(f"wrote {path}")
    err_console.print(f"wrote {paths['png']}" if paths["png"] else
                      "no PNG: matplotlib is not installed (pip install matplotlib)")


@command.command("serve")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-n", "--runs", default=5, show_default=True, help="First requests per kind.")
@click.option("-m", "--memory", type=int, help="Guest memory in MiB (default: the image's).")
@click.option("--wrk-seconds", default=10, show_default=True)
@click.option("--wrk-connections", default=16, show_default=True)
@click.option("--max", "max_instances", default=1, show_default=True,
              help="Instances the proxy may run during the wrk load.")
@click.option("--idle-max", default=100, show_default=True,
              help="Most idle instances to hold at once.")
@click.option("--profile", is_flag=True,
              help="Only the wrk load, then again on an instance that samples where the "
              "app's CPU goes (krait's runtime, the app, its packages, the standard "
              "library), function by function.")
@_output
def serve(image: Path, runs: int, memory: int | None, wrk_seconds: int, wrk_connections: int,
          max_instances: int, idle_max: int, profile: bool, output: Path | None) -> None:
    """`krait serve`: first request cold / from a snapshot / warm, wrk through the proxy,
    and idle instances held."""
    from krait.bench.serve import bench_profile, bench_serve

    if profile:
        doc = bench_profile(image, memory, wrk_seconds, wrk_connections,
                            progress=lambda m: err_console.print(m, highlight=False))
        _write_json(doc, output)
        report = doc["profile"]
        err_console.print(text(
            f"profiled: {doc['profiled_load']['requests_per_s']} requests/s; the app's "
            f"process used {report['process_cpu_s']} s of CPU in {report['seconds']} s, "
            f"{report['profiled_cpu_s']} s of it in profiled threads: "
            f"{report['by_place_s']}\nwhere it went (CPU in the function itself, calls):"))
        for name, seconds, calls in report["self_s"][:20]:
            err_console.print(text(f"  {seconds:8.3f} s {calls:8d}  {name}"))
        return
    doc = bench_serve(image, runs, memory, wrk_seconds, wrk_connections, max_instances,
                      idle_max, progress=lambda m: err_console.print(m, highlight=False))
    _write_json(doc, output)


@command.command("protocols")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--backend", default=None, help="What runs the instances (e.g. process: "
              "the gateway's own cost shows; under TCG the guest is the bottleneck).")
@click.option("--rounds", default=5, show_default=True)
@click.option("--wrk-seconds", default=5, show_default=True)
@click.option("--wrk-connections", default=8, show_default=True)
@click.option("--wrk-threads", default=1, show_default=True)
@_output
def protocols(image: Path, backend: str | None, rounds: int, wrk_seconds: int,
              wrk_connections: int, wrk_threads: int, output: Path | None) -> None:
    """Requests/s through `krait serve --protocol tcp` (the byte proxy) against
    `--protocol http` (with and without the access log), interleaved, in one run."""
    from krait.bench.protocols import bench_protocols

    doc = bench_protocols(image, backend, rounds, wrk_seconds, wrk_connections, wrk_threads,
                          progress=lambda m: err_console.print(m, highlight=False))
    _write_json(doc, output)
    b = doc["http_against_tcp"]
    err_console.print(f"http/tcp requests/s: {b['b_over_a']} (cost {b['cost']:.1%}, "
                      f"p = {b['p_value']}: {b['verdict']})")


@command.command("routes")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-n", "--routes", "count", default=20, show_default=True,
              help="Routes on one port (each the image with an environment of its own).")
@click.option("--backend", default=None, help="What runs the instances (default: qemu).")
@_output
def routes(image: Path, count: int, backend: str | None, output: Path | None) -> None:
    """Many apps behind one port, all scaled to zero: the prewarm at start, and each
    route's first request (a wake from its snapshot)."""
    from krait.bench.routes import bench_routes

    doc = bench_routes(image, count, backend,
                       progress=lambda m: err_console.print(m, highlight=False))
    _write_json(doc, output)
    err_console.print(f"first requests: median {doc['median_first_request_s']:.3f}s, "
                      f"{doc['first_requests_by_start']}")


@command.command("backends")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--on", "uris", multiple=True, metavar="URI", required=True,
              help="A libvirt host to boot through (qemu:///system, qemu+ssh://...); "
              "two or more: also serve across them under wrk.")
@click.option("-n", "--runs", default=5, show_default=True, help="Boots per engine.")
@click.option("--wrk-seconds", default=10, show_default=True)
@click.option("--wrk-connections", default=8, show_default=True)
@_output
def backends(image: Path, uris: tuple[str, ...], runs: int, wrk_seconds: int,
             wrk_connections: int, output: Path | None) -> None:
    """Boot to first 200: QEMU started by krait beside libvirt on each host, interleaved;
    and serve across the hosts under a bounded wrk load."""
    from krait.bench.backends import bench_backends

    doc = bench_backends(image, uris, runs, wrk_seconds, wrk_connections,
                         progress=lambda m: err_console.print(m, highlight=False))
    _write_json(doc, output)


@command.command("abuse")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--idle", default=1000, show_default=True,
              help="Silent connections held open beside the well-behaved client.")
@click.option("--rounds", default=3, show_default=True,
              help="Alternating rounds with and without each abuse.")
@click.option("-n", "--samples", default=10, show_default=True,
              help="Requests per round of the idle part.")
@click.option("--body-mb", default=64, show_default=True, help="Size of the oversized POST.")
@click.option("--slow", default=200, show_default=True, help="Slowloris connections.")
@click.option("--drip", default=1000, show_default=True,
              help="Clients sending a request head a byte every 5 s (part 'drip').")
@click.option("--wrk-seconds", default=10, show_default=True)
@click.option("--wrk-connections", default=8, show_default=True)
@click.option("--parts", default="idle,body,slowloris,drip", show_default=True,
              help="Which abuses, comma-separated: idle, body, slowloris, drip.")
@click.option("--backend", default=None, help="Passed to krait serve (e.g. process).")
@click.option("--protocol", type=click.Choice(["http", "tcp"]), default=None,
              help="Passed to krait serve (default: the image's).")
@_output
def abuse(image: Path, idle: int, rounds: int, samples: int, body_mb: int, slow: int,
          drip: int, wrk_seconds: int, wrk_connections: int, parts: str,
          backend: str | None, protocol: str | None, output: Path | None) -> None:
    """`krait serve` against hostile clients: a normal request's latency with idle
    connections held, an oversized POST, wrk beside a slowloris, and beside clients
    dripping a byte every 5 s."""
    from krait.bench.abuse import PARTS, bench_abuse

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise ConfigError(f"--parts: no part {unknown[0]!r}", hint=f"parts: {', '.join(PARTS)}")
    doc = bench_abuse(image, idle, rounds, samples, body_mb, slow, wrk_seconds,
                      wrk_connections, progress=lambda m: err_console.print(m, highlight=False),
                      parts=chosen, drip=drip, backend=backend, protocol=protocol)
    _write_json(doc, output)


@command.command("app")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-n", "--runs", default=10, show_default=True)
@click.option("-m", "--memory", type=int, help="Guest memory in MiB (default: the image's).")
@click.option("--path", default="/", show_default=True, help="What to ask for.")
@click.option("--expect", default="", help="Text a correct answer contains.")
@click.option("--port", "guest_port", type=int, help="Guest port (default: the image's first).")
@click.option("--https", is_flag=True, help="Ask over HTTPS (the certificate is not checked).")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Boot-time environment.")
@click.option("--wrk-seconds", default=5, show_default=True)
@click.option("--wrk-connections", default=8, show_default=True)
@_output
def app_cmd(image: Path, runs: int, memory: int | None, path: str, expect: str,
            guest_port: int | None, https: bool, env: tuple[str, ...], wrk_seconds: int,
            wrk_connections: int, output: Path | None) -> None:
    """Size, boot to first correct answer, guest memory in use, and wrk requests/s."""
    from krait.bench.apps import Probe, bench_app
    from krait.config import parse_env

    probe = Probe(path, expect.encode(), guest_port, https, tuple(parse_env(list(env)).items()))
    result = bench_app(image, probe, runs, memory, wrk_seconds, wrk_connections)
    _emit(result, output)
    err_console.print(f"guest memory in use {result.extra['guest_memory_in_use_mib']}, "
                      f"{result.extra['requests_per_second']} requests/s")
