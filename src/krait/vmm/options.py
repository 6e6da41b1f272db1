"""QEMU's command line, built from small typed option objects (never from strings).

Each object renders its own option family; :class:`QemuCommand` puts them in order.
``krait run --dry-run`` prints the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from krait.guest.tunnel import ADDRESS as TUNNEL_ADDRESS


def _props(items: Iterable[tuple[str, object]]) -> str:
    out = []
    for key, value in items:
        if isinstance(value, bool):
            value = "on" if value else "off"
        # QEMU's option syntax escapes a comma inside a value by doubling it.
        out.append(f"{key}={str(value).replace(',', ',,')}")
    return ",".join(out)


class Option:
    def args(self) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Machine(Option):
    """microvm without ACPI: QEMU then announces the virtio-mmio devices on the kernel
    command line (virtio_mmio.device=...), so the guest needs no ACPI support."""

    type: str = "microvm"
    props: tuple[tuple[str, object], ...] = (("acpi", False),)

    def args(self) -> list[str]:
        return ["-M", ",".join([self.type, _props(self.props)]).rstrip(",")]


@dataclass(frozen=True)
class Accelerator(Option):
    name: str  # kvm | tcg
    # TCG's translation cache: QEMU's default is large; a small one keeps each idle
    # instance cheap in host memory.
    tb_size_mib: int | None = None

    def args(self) -> list[str]:
        props: list[tuple[str, object]] = []
        if self.name == "tcg" and self.tb_size_mib:
            props.append(("tb-size", self.tb_size_mib))
        return ["-accel", ",".join([self.name, _props(props)]).rstrip(",")]


@dataclass(frozen=True)
class Cpu(Option):
    model: str  # "host" under KVM; "max" under TCG (it has RDRAND, so entropy is ready)
    count: int = 1

    def args(self) -> list[str]:
        return ["-cpu", self.model, "-smp", str(self.count)]


@dataclass(frozen=True)
class Memory(Option):
    mib: int

    def args(self) -> list[str]:
        return ["-m", f"{self.mib}M"]


@dataclass(frozen=True)
class DirectBoot(Option):
    kernel: Path
    append: tuple[str, ...]
    initrd: Path | None = None  # krait's guests have none; a general-purpose VM does

    def args(self) -> list[str]:
        initrd = ["-initrd", str(self.initrd)] if self.initrd else []
        return ["-kernel", str(self.kernel), *initrd, "-append", " ".join(self.append)]


@dataclass(frozen=True)
class Drive(Option):
    """A raw disk image as a virtio-blk device on the MMIO bus (no PCI on microvm)."""

    id: str
    path: Path
    readonly: bool = True
    # QEMU's default (writeback, flushes honoured) is what makes a guest's fsync durable;
    # said here so that it is a choice (krait.vmm.volumes).
    cache: str | None = None
    device: str = "virtio-blk-device"

    def args(self) -> list[str]:
        props: list[tuple[str, object]] = [("file", self.path), ("if", "none"),
                                           ("id", self.id), ("format", "raw"),
                                           ("readonly", self.readonly)]
        if self.cache:
            props.append(("cache", self.cache))
        drive = _props(props)
        return ["-drive", drive, "-device", f"{self.device},drive={self.id}"]


@dataclass(frozen=True)
class Chardev(Option):
    id: str
    backend: str  # stdio | file | socket | null
    props: tuple[tuple[str, object], ...] = ()

    def args(self) -> list[str]:
        return ["-chardev", ",".join([self.backend, f"id={self.id}", _props(self.props)])
                .rstrip(",")]


@dataclass(frozen=True)
class Device(Option):
    driver: str
    props: tuple[tuple[str, object], ...] = ()

    def args(self) -> list[str]:
        return ["-device", ",".join([self.driver, _props(self.props)]).rstrip(",")]


@dataclass(frozen=True)
class Object(Option):
    type: str
    id: str
    props: tuple[tuple[str, object], ...] = ()

    def args(self) -> list[str]:
        return ["-object", ",".join([self.type, f"id={self.id}", _props(self.props)])
                .rstrip(",")]


@dataclass(frozen=True)
class PortForward:
    host: int
    guest: int
    host_addr: str = "127.0.0.1"

    def render(self) -> str:
        return f"tcp:{self.host_addr}:{self.host}-:{self.guest}"


@dataclass(frozen=True)
class UserNetwork(Option):
    """QEMU's user-mode network: no root, no taps; forwards host ports to the guest.
    ``restrict``: the guest reaches nothing outside, but for one forward to ``tunnel``
    (a unix socket krait listens on; see guest.tunnel) if there is one."""

    id: str = "net0"
    forwards: tuple[PortForward, ...] = ()
    restrict: bool = True
    tunnel: Path | None = None

    def args(self) -> list[str]:
        props: list[tuple[str, object]] = [("id", self.id)]
        if self.restrict:
            props.append(("restrict", True))
        props += [("hostfwd", f.render()) for f in self.forwards]
        if self.tunnel is not None:
            addr, port = TUNNEL_ADDRESS
            props.append(("guestfwd", f"tcp:{addr}:{port}-unix:{self.tunnel}"))
        return ["-netdev", "user," + _props(props)]


@dataclass(frozen=True)
class Serial(Option):
    chardev: str

    def args(self) -> list[str]:
        return ["-serial", f"chardev:{self.chardev}"]


@dataclass(frozen=True)
class Monitor(Option):
    """QMP on a unix socket (qemu.qmp connects to it)."""

    path: Path

    def args(self) -> list[str]:
        return ["-qmp", f"unix:{self.path},server=on,wait=off"]


@dataclass(frozen=True)
class RamFile(Option):
    """Guest RAM in a file. ``shared``: the guest writes into the file (a snapshot's
    template); otherwise the file is mapped privately (a clone: its pages are read from
    the one host copy until the guest writes one)."""

    path: Path
    mib: int
    shared: bool
    id: str = "ram"

    def args(self) -> list[str]:
        props = _props((("id", self.id), ("size", f"{self.mib}M"), ("mem-path", self.path),
                        ("share", self.shared)))
        return ["-object", f"memory-backend-file,{props}"]


@dataclass(frozen=True)
class Incoming(Option):
    """Start paused, waiting for a saved state that krait hands over QMP (as a file
    descriptor: no exec: URI, no file QEMU must be able to open)."""

    def args(self) -> list[str]:
        return ["-incoming", "defer"]


@dataclass(frozen=True)
class GdbStub(Option):
    """QEMU's gdbstub on loopback, the guest's CPUs stopped until gdb says continue."""

    port: int

    def args(self) -> list[str]:
        return ["-gdb", f"tcp:127.0.0.1:{self.port}", "-S"]


@dataclass(frozen=True)
class Sandbox(Option):
    """QEMU's own seccomp filter: no obsolete system calls, no fork or exec, no changes
    to scheduling or CPU affinity. With ``runas`` (krait runs as root), QEMU becomes that
    user once it has opened what it needs; the filter must then allow set*id calls for
    that one step, and an unprivileged process has nothing to raise itself back to."""

    runas: str | None = None

    def args(self) -> list[str]:
        elevate = "allow" if self.runas else "deny"
        sandbox = ["-sandbox", f"on,obsolete=deny,elevateprivileges={elevate},spawn=deny,"
                   "resourcecontrol=deny"]
        return [*sandbox, "-runas", self.runas] if self.runas else sandbox


@dataclass(frozen=True)
class Flag(Option):
    """A bare switch such as -nodefaults."""

    name: str

    def args(self) -> list[str]:
        return [self.name]


@dataclass
class QemuCommand:
    binary: str = "qemu-system-x86_64"
    options: list[Option] = field(default_factory=list)

    def add(self, *options: Option) -> QemuCommand:
        self.options.extend(options)
        return self

    def argv(self) -> list[str]:
        return [self.binary] + [a for o in self.options for a in o.args()]
