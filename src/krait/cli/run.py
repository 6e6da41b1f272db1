"""``krait run``: boot an image in the foreground; Ctrl-C stops it; exit code = the app's."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from krait.cli._settings_flags import overrides, setting_options
from krait.config import parse_env
from krait.config.settings import parse_setting
from krait.errors import ConfigError, GuestFailed
from krait.image.archive import Image, open_image
from krait.image.registry import is_ref, pull
from krait.image.signing import Trust
from krait.vmm.backends import is_uri
from krait.vmm.base import Backend, Vm, VmSpec
from krait.vmm.foreground import run_in_foreground
from krait.vmm.launch import RunOptions, backend_for, prepare
from krait.vmm.options import PortForward

# Printed by the guest kernel as the VM ends; noise for the user.
_QUIET_LINES = ("reboot: Restarting system", "reboot: machine restart")


def parse_publish(values: tuple[str, ...]) -> tuple[PortForward, ...]:
    """-p HOST:GUEST or -p PORT (the same on both sides), like docker's."""
    out = []
    for value in values:
        host, _, guest = value.rpartition(":") if ":" in value else (value, "", value)
        try:
            out.append(PortForward(int(host), int(guest)))
        except ValueError:
            raise ConfigError(f"-p {value}: expected HOST_PORT:GUEST_PORT, e.g. -p 8080:8080",
                              ) from None
    return tuple(out)


def trust_options(fn: Any) -> Any:
    """--verify and --digest: what an image must be to boot (krait.image.signing)."""
    fn = click.option("--digest", metavar="sha256:HEX",
                      help="Boot only the image with this digest (`krait inspect` shows it).")(fn)
    return click.option("--verify", type=click.Path(path_type=Path), metavar="KEY.pub",
                        help="Boot only an image signed with this key's private half "
                        "(`krait build --sign`).")(fn)


def from_environment(item: str) -> str:
    """--env KEY (no value) passes KEY's value from this process's environment, as docker
    does: a secret then appears on no command line at all, krait's own included."""
    if "=" in item:
        return item
    if item not in os.environ:
        raise ConfigError(f"--env {item}: {item} is not set in this environment",
                          hint=f"set it (export {item}=...) or give --env {item}=VALUE")
    return f"{item}={os.environ[item]}"


def on_option(fn: Any) -> Any:
    """--on URI: the host to run on (libvirt's; serve takes several)."""
    return click.option("--on", "on", multiple=True, metavar="URI[,URI...]",
                        help="Where to run it: a libvirt host (qemu:///system, "
                        "qemu+ssh://USER@HOST/system); implies --backend libvirt.")(fn)


def options_from_flags(publish: tuple[str, ...], env: tuple[str, ...], accel: str | None,
                       settings: dict[str, Any], volumes: tuple[str, ...] = (),
                       on: tuple[str, ...] = ()) -> RunOptions:
    given = overrides(settings)
    # --connect is for services only; where instances run is --on.
    hosts = [v for v in given.get("connect", ()) if is_uri(v)]
    if hosts:
        raise ConfigError(f"--connect {hosts[0]}: --connect points a service the image "
                          "declares elsewhere (NAME=HOST:PORT); a host to run on is --on",
                          hint=f"krait ... --on {hosts[0]}")
    uris = tuple(uri for value in on for uri in value.split(",") if uri)
    for uri in uris:
        if not is_uri(uri):
            raise ConfigError(f"--on {uri}: not a host URI",
                              hint="e.g. --on qemu:///system or qemu+ssh://USER@HOST/system")
    try:
        boot_env = parse_env([from_environment(item) for item in env]) if env else {}
    except ValueError as e:
        raise ConfigError(f"--env: {e}", hint="use --env KEY=VALUE, or --env KEY to pass "
                          "KEY's value from krait's own environment") from None
    parsed = {k: parse_setting(k, v, "command line") for k, v in given.items()}
    return RunOptions(ports=parse_publish(publish), env=boot_env, accel=accel,
                      memory=parsed.get("memory"), vcpus=parsed.get("vcpus"),
                      cmdline=parsed.get("cmdline", ""), connect=parsed.get("connect", ()),
                      volumes=volumes, backend=parsed.get("backend"), hosts=uris)


def image_file(image: str, trust: Trust | None = None) -> Path:
    """IMAGE as a file: a .krait path, or a registry reference pulled into the cache."""
    path = Path(image)
    if not path.exists() and is_ref(image):
        return pull(image, trust=trust).path
    return path


@click.command("run")
@click.argument("image_arg", metavar="IMAGE")
@click.option("-p", "--publish", multiple=True, metavar="HOST:GUEST",
              help="Forward a host port (on 127.0.0.1) to a guest port.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE",
              help="Environment for this boot (on a 0600 disk of its own, never on a "
              "command line); --env KEY takes KEY's value from krait's environment.")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="FILE:TARGET[:ro]",
              help="Attach a data volume: FILE:/data or FILE:/mnt/NAME mounts an ext4 volume "
              "(`krait volume create`); FILE:NAME gives the app a raw disk ($KRAIT_VOLUME_NAME).")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default=None,
              help="Accelerator (default: KVM when it really works, else TCG).")
@click.option("--target", type=click.Choice(["vm", "process"]), default="vm", show_default=True,
              help="vm: boot the image; process: run its app, interpreter and layers as a "
              "plain process on this host (loopback only, for a quick edit-run loop; the "
              "same as --backend process).")
@click.option("--watch", "watch_dir", type=click.Path(path_type=Path, file_okay=False),
              help="With --target process: rebuild IMAGE from this app folder on each change "
              "and restart the app.")
@click.option("--dry-run", is_flag=True, help="Print the QEMU command line and exit.")
@click.option("--gdb", "gdb_port", type=int, is_flag=False, flag_value=1234, default=None,
              metavar="[PORT]", help="Start paused, with QEMU's gdbstub on 127.0.0.1:PORT "
              "(default 1234), and print the gdb command to attach with the kernel's symbols.")
@click.option("-d", "--detach", is_flag=True,
              help="Run in the background as an instance (see krait ps/logs/stop/rm).")
@click.option("--name", help="The instance's name (with -d; default: IMAGE-NAME-xxxxxx).")
@click.option("--restart", type=click.Choice(["no", "on-failure", "always"]), default="no",
              show_default=True, help="With -d: bring the instance back when it ends.")
@trust_options
@on_option
@setting_options("boot")
def command(image_arg: str, publish: tuple[str, ...], env: tuple[str, ...],
            volumes: tuple[str, ...], accel: str | None, target: str,
            watch_dir: Path | None, dry_run: bool,
            gdb_port: int | None, detach: bool, name: str | None, restart: str,
            verify: Path | None, digest: str | None, on: tuple[str, ...],
            **settings: Any) -> None:
    """Boot IMAGE (a .krait file, or a registry reference) and show its console; Ctrl-C
    stops it gracefully."""
    if target == "process":  # the same as --backend process
        settings["backend"] = "process"
    options = options_from_flags(publish, env, accel, settings, volumes, on)
    trust = Trust.from_flags(verify, digest)
    image = image_file(image_arg, trust)
    img = open_image(image, trust)
    img, spec = prepare(image, options, image=img)
    if gdb_port is not None:
        if detach or not 0 < gdb_port < 65536:
            raise ConfigError("--gdb PORT: a port from 1 to 65535, without -d",
                              hint="debug in the foreground: krait run --gdb 1234 IMAGE")
        spec = spec.with_qemu(gdb_port=gdb_port)
    backend = backend_for(img, options)
    if watch_dir is not None and (backend.name != "process" or detach):
        raise ConfigError("--watch needs --target process, in the foreground",
                          hint="krait run --target process --watch APP_DIR IMAGE")
    if watch_dir is not None and (verify or digest):
        raise ConfigError("--watch rebuilds the image: it cannot be --verify'd or pinned")
    if dry_run:
        click.echo(backend.describe(spec))
        return
    if detach or name or restart != "no":
        if not detach:
            raise ConfigError("--name and --restart need -d (a detached instance)")
        from krait.cli._output import err_console
        from krait.fleet.instances import start_detached

        folder = start_detached(image, options, name=name, restart=restart)
        err_console.print(f"krait: started {folder.name} ({spec.memory} MiB, "
                          f"{spec.accel.reason}); `krait logs -f {folder.name}` shows its console")
        click.echo(folder.name)
        return

    def show(line: str) -> None:
        if line.strip() not in _QUIET_LINES:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    if watch_dir is not None:
        from krait.cli.kernel import ensure_kernel
        from krait.vmm.foreground import watch

        def start() -> Vm:
            _, fresh = prepare(image, options)  # the image as it was just rebuilt
            return backend.start(fresh, on_console=show)

        tell = _greet(img, spec, backend)
        sys.exit(watch(watch_dir, image, ensure_kernel(), start, tell))
    # QEMU first: what is printed (and rich, which prints it) can come while it boots.
    vm = backend.start(spec, on_console=show)
    tell = _greet(img, spec, backend)
    result = run_in_foreground(vm, tell)
    if result.exit_status is None:
        raise GuestFailed(result.reason, hint="the console output above shows what happened; "
                          "rerun with --cmdline loglevel=7 for the kernel's messages")
    if result.crashed:
        tell(result.reason)
    sys.exit(result.exit_status)


def _greet(img: Image, spec: VmSpec, backend: Backend) -> Callable[[str], None]:
    """Say what runs where (and warn of a port the app does not listen on); return how
    to tell the user more."""
    from krait.cli._output import err_console, text

    declared = set(img.manifest.ports)
    for forward in spec.ports:
        if declared and forward.guest not in declared:
            err_console.print(f"[yellow]warning:[/] the app listens on {sorted(declared)}, "
                              f"not on {forward.guest}")
    if backend.name == "process":
        err_console.print(f"krait: running {img.name} as a process on this host")
    else:
        where = f", on {backend.label} at {backend.uri}" if backend.uri else ""
        err_console.print(f"krait: booting {img.name} ({spec.memory} MiB, "
                          f"{spec.accel.reason}{where})")
    if spec.qemu.gdb_port:
        # The unpacked kernel is the ELF vmlinux, symbols and all (PVH boot); a bzImage
        # (--kernel) has none to give.
        symbols = spec.kernel if img.manifest.kernel.format == "elf" else ""
        err_console.print(f"krait: paused for gdb; attach with\n  gdb {symbols} -ex "
                          f"'target remote 127.0.0.1:{spec.qemu.gdb_port}'\nand `continue` to boot",
                          highlight=False)

    def tell(message: str) -> None:
        err_console.print(text(f"krait: {message}"))

    return tell
