"""From an image and run options to a VM spec: the kernel command line lives here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from krait.config.settings import LOOPBACK, Service, named_addresses
from krait.errors import ConfigError, VmError
from krait.guest import protocol
from krait.image.archive import Image, open_image, unpack_for_boot
from krait.vmm.accel import Accel, detect_accel
from krait.vmm.backends import choose, get_backend
from krait.vmm.base import Backend, Disk, VmSpec
from krait.vmm.options import PortForward
from krait.vmm.volumes import Volume

# Always on the command line. Later arguments win, so the user's extras come last.
BASE_CMDLINE = (
    "console=ttyS0",
    "8250.nr_uarts=2",
    # The guest ends by resetting; a triple fault is the reset that needs no firmware.
    "reboot=t",
    "panic=-1",
    "quiet",
    # CPython asks for random bytes at start-up; never wait for the entropy pool.
    "random.trust_cpu=on",
    # One program and no other user in the guest: nothing for speculation mitigations to
    # protect, and patching them in costs a quarter second under emulation.
    "mitigations=off",
    # The base layer is the root, mounted read-only by the kernel itself: no initramfs.
    "root=/dev/vda",
    "rootfstype=erofs",
    "ro",
    "init=/init",
)


@dataclass(frozen=True)
class RunOptions:
    ports: tuple[PortForward, ...] = ()
    memory: int | None = None
    vcpus: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cmdline: str = ""
    # NAME=HOST:PORT: where declared services lead from this boot (see services()).
    connect: tuple[str, ...] = ()
    # FILE:/data[:ro], FILE:/mnt/NAME, FILE:NAME (raw): see krait.vmm.volumes.
    volumes: tuple[str, ...] = ()
    accel: str | None = None
    backend: str | None = None  # by name (vmm.backends); None: $KRAIT_BACKEND, the image's
    hosts: tuple[str, ...] = ()  # where to run: libvirt URIs (--on URI)
    workdir: Path | None = None
    console_log: Path | None = None
    # Refuse less memory than the image needs (benchmarks looking for the limit do not).
    check_memory: bool = True
    # Sample where the app spends its CPU once ready; reported when it ends (its console).
    profile: bool = False


# Only under emulation: the kernel spends a quarter second calibrating and verifying the
# local APIC timer against the PIT (KVM offers a TSC-deadline timer, which needs none),
# and 50 ms waiting for ticks to prove the IO-APIC's timer works (a KVM guest skips that
# check by itself; QEMU's timer does work).
TCG_CMDLINE = ("noapictimer", "no_timer_check")


# x86's COMMAND_LINE_SIZE, the terminating NUL included.
COMMAND_LINE_SIZE = 2048


def services(image: Image, options: RunOptions) -> tuple[Service, ...]:
    """The services this boot's guest may reach: the image's ``connect``, each pointed
    elsewhere by a ``--connect`` of the same name (the guest's side stays, so the app's
    settings do too); a new NAME=HOST:PORT adds a service at 127.0.0.1:PORT. A new host
    name cannot be added at boot: the image's /etc/hosts knows only those it was built
    with."""
    chosen = {s.name: s for s in map(Service.parse, image.manifest.boot.connect)}
    for given in map(Service.parse, options.connect):
        declared = chosen.get(given.name)
        if declared:
            chosen[given.name] = replace(given, guest_port=declared.guest_port,
                                         guest_host=declared.guest_host)
        elif given.by_name:
            raise ConfigError(f"--connect {given}: {image.name} declares no service "
                              f"{given.name!r}, and a host name cannot be added at boot",
                              hint="declare it in the app's `connect` and build again, or "
                              "give a NAME=ADDRESS:PORT service the app finds by "
                              "$KRAIT_CONNECT_NAME")
        else:
            chosen[given.name] = given
    places = [s.guest_address for s in chosen.values()]
    clash = [s for s in chosen.values() if places.count(s.guest_address) > 1
             or s.guest_port in image.manifest.ports]
    if clash:
        raise ConfigError(f"--connect: {clash[0].guest_address} is taken inside the guest "
                          "(by the app or another service)",
                          hint="a new service keeps its port inside the guest: pick another")
    return tuple(chosen.values())


def volumes(image: Image, options: RunOptions) -> tuple[Volume, ...]:
    """This boot's volumes, checked: each file there (ext4 where it is mounted), each
    target once, and every mount point the image declares given."""
    given = tuple(Volume.parse(v) for v in options.volumes)
    targets = [v.target for v in given]
    for v in given:
        if targets.count(v.target) > 1:
            raise ConfigError(f"--volume: {v.target} is given twice")
        v.check()
    missing = [m for m in image.manifest.settings.get("volumes", ()) if m not in targets]
    if missing:
        raise ConfigError(f"{image.name} expects a volume at {missing[0]}",
                          hint=f"give it one: --volume FILE:{missing[0]} (make FILE with "
                          "`krait volume create FILE --size 256M`)")
    return given


def _disk(index: int) -> str:
    return f"/dev/vd{chr(ord('a') + index)}"


def boot_settings(image: Image, options: RunOptions,
                  reach: tuple[Service, ...] | None = None,
                  attached: tuple[Volume, ...] | None = None) -> bytes:
    """What this boot tells the guest besides the image (its boot disk; see protocol).
    ``reach`` and ``attached``: services() and volumes(), if worked out already."""
    boot: dict[str, object] = {"env": options.env} if options.env else {}
    if options.profile:
        boot["profile"] = True
    reach = services(image, options) if reach is None else reach
    if reach:
        named = named_addresses(reach)
        boot["connect"] = {s.name: [named.get(s.guest_host, LOOPBACK), s.guest_port,
                                    s.guest_host] for s in reach}
    attached = volumes(image, options) if attached is None else attached
    if attached:
        # After the image's disks and the boot disk itself.
        first = len(image.manifest.layers) + 1
        boot["volumes"] = [{"device": _disk(first + i), "target": v.target,
                            "readonly": v.readonly, "raw": v.raw}
                           for i, v in enumerate(attached)]
    data = protocol.encode_boot(boot) if boot else b""
    if len(data) > protocol.MAX_BOOT_SETTINGS:
        raise ConfigError(f"the boot settings (--env) come to {len(data)} bytes, over "
                          f"{protocol.MAX_BOOT_SETTINGS}",
                          hint="pass large data as a file the app reads, not --env")
    return data


def kernel_cmdline(image: Image, options: RunOptions, accel: Accel,
                   settings: bytes | None = None) -> tuple[str, ...]:
    """``settings``: boot_settings(), if worked out already (the boot disk is named only
    when there are some)."""
    settings = boot_settings(image, options) if settings is None else settings
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in image.name)[:63] or "krait"
    network = f"ip={protocol.GUEST_ADDR}::{protocol.GATEWAY}:255.255.255.0:{name}:eth0:off"
    extras = (image.manifest.boot.cmdline + " " + options.cmdline).split()
    # The boot disk follows the image's own disks (/dev/vda is the first).
    boot_disk = _disk(len(image.manifest.layers))
    boot_args = [f"{protocol.BOOT_PARAM}={boot_disk}"] if settings else []
    tuned = TCG_CMDLINE if accel.name == "tcg" else ()
    others = [p.name for p in image.manifest.layers if p.mount != "/"]
    disks = [f"{protocol.DISKS_PARAM}={','.join(others)}"] if others else []
    cmdline = (*BASE_CMDLINE, *tuned, network, protocol.MARKER, *disks, *boot_args, *extras)
    if len(" ".join(cmdline)) >= COMMAND_LINE_SIZE:
        # The kernel would cut it short, silently: the marker or the settings lost.
        raise VmError(f"the kernel command line would be {len(' '.join(cmdline))} bytes, "
                      f"over the kernel's {COMMAND_LINE_SIZE - 1}",
                      hint="shorten the cmdline setting or --cmdline")
    return cmdline


def backend_for(image: Image, options: RunOptions) -> Backend:
    """The backend this boot runs on (one host: only `krait serve` places on several)."""
    name = choose(options.backend, image.manifest.boot.backend, options.hosts)
    if len(options.hosts) > 1:
        raise ConfigError(f"--connect: {len(options.hosts)} libvirt hosts for one VM",
                          hint="give one; `krait serve` places instances on several")
    return get_backend(name, options.hosts[0] if options.hosts else None)


def prepare(image_path: Path, options: RunOptions, accel: Accel | None = None,
            image: Image | None = None) -> tuple[Image, VmSpec]:
    """Check the image, unpack what QEMU needs, and describe the VM to start."""
    image = image or open_image(image_path)
    boot = image.manifest.boot
    memory = options.memory or boot.memory
    minimum = image.manifest.memory.minimum_mib
    if options.check_memory and memory < minimum:
        raise VmError(f"this image needs at least {minimum} MiB of guest memory; "
                      f"{memory} MiB is too little ({image.manifest.memory.explain()})",
                      hint=f"give it --memory {boot.memory}M (its default) or at least "
                      f"{minimum}M")
    files = unpack_for_boot(image)
    # The root first (/dev/vda), then the others in the order krait.disks names them.
    ordered = sorted(files.disks, key=lambda d: d[0].mount != "/")
    accel = accel or detect_accel(options.accel)
    # Each worked out once: a volume's check reads its file.
    reach, attached = services(image, options), volumes(image, options)
    settings = boot_settings(image, options, reach, attached)
    spec = VmSpec(
        name=image.name,
        kernel=files.kernel,
        disks=tuple(Disk(part.name, path, digest=part.unpacked_sha256)
                    for part, path in ordered),
        cmdline=kernel_cmdline(image, options, accel, settings),
        memory=memory,
        vcpus=options.vcpus or boot.vcpus,
        accel=accel,
        ports=options.ports,
        services=reach,
        boot_settings=settings,
        volumes=attached,
        workdir=options.workdir,
        console_log=options.console_log,
        interpreter=(image.manifest.interpreter["path"], image.manifest.interpreter["version"]),
    )
    return image, spec
