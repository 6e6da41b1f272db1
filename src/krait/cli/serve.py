"""``krait serve IMAGE --port P``: boot on the first connection, scale to zero when idle."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import click

from krait.cli._output import err_console
from krait.cli.run import options_from_flags, trust_options
from krait.errors import ConfigError
from krait.fleet.driver import hosts_for
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits
from krait.fleet.serve import run_server
from krait.image.archive import open_image
from krait.image.signing import Trust
from krait.names import check_name, name_from
from krait.vmm.backends import BACKENDS, choose
from krait.vmm.launch import volumes as attached
from krait.vmm.volumes import Volume

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(value: str) -> float:
    """30, 30s, 500ms, 2m, 1h -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", value)
    if not match:
        raise ConfigError(f"{value!r} is not a duration", hint="use e.g. 30s, 500ms, 2m")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.command("serve")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--port", type=int, required=True, help="Host port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--name", help="Name of this serve (default: IMAGE-NAME-PORT).")
@click.option("--idle", default="30s", show_default=True,
              help="Stop an instance after this long with no connection (scale to zero).")
@click.option("--pause", "pause_after", default="2s", show_default=True,
              help="Pause an instance after this long with no connection (no guest CPU; the "
              "next connection resumes it in milliseconds); 'off' never pauses.")
@click.option("--max", "max_instances", default=1, show_default=True,
              help="Most instances to run under load.")
@click.option("--min", "min_instances", default=0, show_default=True,
              help="Instances kept running even when idle.")
@click.option("--per-instance", default=10, show_default=True,
              help="Connections per instance before booting another (up to --max).")
@click.option("--snapshot/--no-snapshot", default=True, show_default=True,
              help="Save a ready instance's state once; wake later ones from it.")
@click.option("--boot-timeout", default="60s", show_default=True,
              help="Give up on a boot (and answer 503) after this long.")
@click.option("--max-connections", default=Limits.max_connections, show_default=True,
              help="Open client connections accepted in all; more get 503.")
@click.option("--max-per-client", default=Limits.max_per_client, show_default=True,
              help="Open connections accepted from one client address; more get 503.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE",
              help="Environment for each boot (on a 0600 disk of its own, never on a "
              "command line); --env KEY takes KEY's value from krait's environment.")
@click.option("-m", "--memory", help="Guest memory, e.g. 48M (default: the image's).")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="FILE:TARGET:ro",
              help="Attach a data volume to every instance, read-only (FILE:/data:ro); a "
              "read-write one is one VM's at a time: `krait run -d` it.")
@click.option("--connect", multiple=True, metavar="NAME=HOST:PORT",
              help="Point a service the image declares (connect) at this address.")
@click.option("--on", "on", multiple=True, metavar="URI[,URI...]",
              help="The libvirt hosts to place instances on (qemu:///system, "
              "qemu+ssh://USER@HOST/system); implies --backend libvirt.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default=None,
              help="What runs the instances (default: $KRAIT_BACKEND, the image's setting, "
              "libvirt when --on names hosts, else qemu).")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default=None)
@trust_options
def command(image: Path, port: int, host: str, name: str | None, idle: str,
            pause_after: str, max_instances: int, min_instances: int, per_instance: int,
            snapshot: bool, boot_timeout: str, max_connections: int, max_per_client: int,
            env: tuple[str, ...], memory: str | None, volumes: tuple[str, ...],
            connect: tuple[str, ...], on: tuple[str, ...], backend: str | None,
            accel: str | None, verify: Path | None, digest: str | None, **_: Any) -> None:
    """Serve IMAGE on PORT, booting instances on demand.

    `krait replace NAME NEW_IMAGE` (or SIGHUP, to reload IMAGE) swaps the image with no
    downtime. Ctrl-C stops everything it started.
    """
    if name is not None:
        check_name(name, "serve")  # before anything is read or started
    fleet_log = logging.getLogger("krait.fleet")
    if fleet_log.getEffectiveLevel() > logging.INFO:
        fleet_log.setLevel(logging.INFO)  # boots, wakes, stops: what a serve is for
    if max_instances < 1 or min_instances < 0 or min_instances > max_instances:
        raise ConfigError("need 0 <= --min <= --max and --max >= 1")
    if max_connections < 1 or max_per_client < 1:
        raise ConfigError("--max-connections and --max-per-client must be at least 1")
    limits = Limits(max_connections=max_connections, max_per_client=max_per_client)
    trust = Trust.from_flags(verify, digest)  # every image it serves, replacements too
    img = open_image(image, trust)
    writable = [v for v in volumes if not Volume.parse(v).readonly]
    if writable:
        raise ConfigError(f"--volume {writable[0]}: serve runs several instances of an "
                          "image, and a read-write volume is one VM's at a time",
                          hint="attach it read-only (FILE:/data:ro), or run one instance "
                          "with `krait run -d IMAGE --volume FILE:/data`")
    given = {"memory": memory, "connect": connect, "backend": backend}
    options = options_from_flags((), env, accel, given, volumes, on)
    attached(img, options)  # every volume checked now, not at the first connection
    pause = None if pause_after == "off" else parse_duration(pause_after)
    policy = ScalePolicy(max_instances=max_instances, min_instances=min_instances,
                         idle_seconds=parse_duration(idle), per_instance=per_instance,
                         pause_seconds=pause)
    # Its instances are named after it, and its files are in the state folder.
    serve_name = check_name(name, "serve") if name else f"{name_from(img.name)}-{port}"

    hosts = hosts_for(choose(options.backend, img.manifest.boot.backend, options.hosts),
                      options.hosts)
    wakes = snapshot and hosts[0].backend.snapshots

    def listening(gateway: Gateway) -> None:
        where = f"[{gateway.host}]" if ":" in gateway.host else gateway.host
        err_console.print(f"krait: serving {img.name} on http://{where}:{gateway.port} as "
                          f"{serve_name} (idle {policy.idle_seconds:g}s"
                          f"{f', pause {pause:g}s' if pause is not None else ''}, "
                          f"max {max_instances}"
                          f"{f', on {len(hosts)} hosts' if len(hosts) > 1 else ''}"
                          f"{', snapshot wake' if wakes else ''})")

    gateway = run_server(image, port, policy, serve_name, options, snapshots=snapshot,
                         boot_timeout=parse_duration(boot_timeout), on_listening=listening,
                         host=host, limits=limits, trust=trust, hosts=hosts)
    s = gateway.stats
    err_console.print(f"krait: stopped; {s.connections} connections, {s.boots} boots "
                      f"({s.wakes} from snapshot), {s.resumes} resumes from pause, "
                      f"{s.boot_failures} failed, "
                      f"{s.rejected} answered 503, {s.upstream_errors} cut")
