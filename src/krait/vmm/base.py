"""The narrow interface every backend offers, and the spec/status it speaks.

A backend turns a frozen :class:`VmSpec` (what we want) into a running :class:`Vm`,
which reports what was observed. Backends are chosen by name (:mod:`krait.vmm.backends`):
QEMU started by krait, libvirt (local or over SSH), and the app as a plain process for
development. Whoever holds a Vm talks to it only through this interface.

A VM also has a reference (:attr:`Vm.ref`): a string its backend makes and alone
understands. Records keep it (with the backend's name and host), and whoever finds it
there later — `krait ps`, `krait stop` after a supervisor died — asks the backend what
is true now (:meth:`Backend.status`) and how to end it (:meth:`Backend.stop`,
:meth:`Backend.remove`), without knowing which backend it is.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from krait.config.settings import Service
from krait.vmm.accel import Accel
from krait.vmm.machine import MICROVM, Machine
from krait.vmm.options import PortForward
from krait.vmm.volumes import Volume

# The sockets a backend creates in a VM's work folder (instance folders are work folders).
CONTROL_SOCKET = "control.sock"
TUNNEL_SOCKET = "tunnel.sock"  # the guest's connections to its services (guest.tunnel)
BOOT_DISK = "boot.disk"  # the boot settings (protocol.encode_boot), 0600
QMP_SOCKET = "qmp.sock"


@dataclass(frozen=True)
class Disk:
    """A disk attached to the guest, in order (the first is /dev/vda)."""

    name: str  # the image layer it holds ("base", "packages", "app")
    path: Path
    readonly: bool = True
    digest: str = ""  # sha256 of the unpacked disk (what the image's manifest says)


@dataclass(frozen=True)
class QemuOptions:
    """What only the QEMU backend does; any other refuses a spec that asks for it."""

    qmp: bool = False  # a QMP monitor socket in the workdir (snapshots, run state)
    ram_file: Path | None = None  # guest RAM in this file (see RamFile) ...
    ram_shared: bool = False  # ... written by the guest (a template), or mapped privately
    incoming: bool = False  # start paused, for a saved state to be loaded (a wake)
    gdb_port: int | None = None  # start paused, with QEMU's gdbstub on 127.0.0.1:PORT


@dataclass(frozen=True)
class VmSpec:
    """A VM as every backend starts it; ``qemu`` holds what only QEMU's backend does."""

    name: str
    kernel: Path
    disks: tuple[Disk, ...]
    cmdline: tuple[str, ...]
    memory: int  # MiB
    vcpus: int
    accel: Accel
    ports: tuple[PortForward, ...] = ()
    services: tuple[Service, ...] = ()  # what the guest may reach outside (nothing else)
    # This boot's settings (--env...), a read-only disk after the image's: never argv.
    boot_settings: bytes = b""
    volumes: tuple[Volume, ...] = ()  # data disks, after the boot disk
    workdir: Path | None = None  # sockets and logs; a temporary folder when None
    console_log: Path | None = None  # write the console here instead of a pipe
    # The image's interpreter (path, version): a backend that runs the app as a process
    # of this host needs it; the others boot the image's own.
    interpreter: tuple[str, str] = ("", "")
    machine: Machine = MICROVM  # what every backend renders (krait.vmm.machine)
    qemu: QemuOptions = QemuOptions()  # only for QEMU started by krait

    def with_qemu(self, **changes: object) -> VmSpec:
        return replace(self, qemu=replace(self.qemu, **changes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class VmResult:
    """How a VM ended."""

    exit_status: int | None  # the app's, as the guest reported it; None if it never did
    crashed: bool  # the app raised (its traceback is on the console)
    vmm_status: int  # the VMM process's own exit status
    console_tail: str
    reason: str  # one line for the user


@dataclass(frozen=True)
class VmStatus:
    """What a backend observes of a VM now, from its reference (:meth:`Backend.status`)."""

    running: bool  # it exists and has not ended
    paused: bool = False  # its CPUs are stopped (it keeps its memory)
    pid: int | None = None  # its process on this machine, if it has one
    rss_mb: float | None = None  # that process's resident memory
    started: float | None = None  # wall clock when it started, if known

    @classmethod
    def gone(cls) -> VmStatus:
        return cls(running=False)


class Vm(ABC):
    """A running VM, as its backend started it: ready or not, its console, its end. The
    guest's half of what it reports is krait.guest.protocol; how a backend reads it is
    krait.vmm.reporting. Whoever holds one stops it (:meth:`stop`) or waits for it."""

    spec: VmSpec
    pid: int | None = None  # the VMM's process on this host, if it is krait's child
    ref: str = ""  # what its backend finds it again by (Backend.status), opaque to others
    ready_at: float | None = None  # time.monotonic() when the guest first said ready
    started_at: float  # time.monotonic() when it was started
    timeline: dict[str, float]  # when the guest did each step of its boot (protocol)

    @abstractmethod
    def alive(self) -> bool:
        """Does the VM still run (cheap: called often)?"""

    @abstractmethod
    def console_tail(self) -> str:
        """The last lines of its console."""

    @abstractmethod
    def wait_ready(self, timeout: float) -> bool:
        """Block until the guest says it is ready; False if it ended or timed out first."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask the guest to shut down gracefully (the app gets SIGTERM)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> VmResult | None:
        """Wait for the VM to end; None if it is still running after ``timeout``."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the VM now, without asking the guest."""

    def pause(self) -> None:
        """Stop the guest's CPUs; it keeps its memory and resumes in milliseconds."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause")

    def resume(self) -> None:
        """Run a paused guest again."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause")

    def save(self, state: Path) -> None:
        """Save a template's device state to ``state`` (its RAM is its RAM file): what
        :meth:`Backend.restore` wakes clones from. Only where ``Backend.snapshots``."""
        raise NotImplementedError(f"{type(self).__name__} cannot take snapshots")

    def stop(self, grace: float = 10.0) -> VmResult:
        """Graceful stop, then a hard one after ``grace`` seconds."""
        self.request_stop()
        result = self.wait(grace)
        if result is None:
            self.kill()
            result = self.wait()
        assert result is not None
        return result


class Backend(ABC):
    """What runs VMs: starts them from a spec, and answers for them later by reference.

    Each backend is one module of :mod:`krait.vmm`, registered by name in
    :mod:`krait.vmm.backends`; nothing else names or constructs one."""

    name: str
    uri = ""  # the host it starts VMs at (a libvirt URI); "" for this machine
    snapshots = False  # can save templates and wake clones (Vm.save, restore)

    @property
    def address(self) -> str:
        """Where the ports its VMs forward are reached from this machine."""
        return "127.0.0.1"

    @property
    def label(self) -> str:
        """What it is, for a listing: its name, and the host it runs VMs on."""
        return self.name

    @property
    def host_name(self) -> str:
        """The host its VMs' forwarded ports are on, as a listing names it."""
        return "127.0.0.1"

    @abstractmethod
    def status(self, ref: str, detail: bool = True) -> VmStatus:
        """What is true now of the VM ``ref`` names (:attr:`Vm.ref`); not running if it
        ended, is not ours, or cannot be asked. ``detail``: also what costs a round trip
        (whether it is paused)."""

    @abstractmethod
    def remove(self, ref: str) -> None:
        """End the VM ``ref`` names now, without asking its guest, and what it held (an
        instance whose owner died); one that is gone already is no error."""

    def stop(self, ref: str, grace: float = 10.0) -> None:
        """End the VM ``ref`` names gracefully (the app gets SIGTERM), hard after
        ``grace`` seconds: for a VM no live :class:`Vm` holds."""
        self.remove(ref)

    @abstractmethod
    def command(self, spec: VmSpec) -> list[str]:
        """The command that would start ``spec`` (for logs and snapshot keys)."""

    def describe(self, spec: VmSpec) -> str:
        """What would be started, for --dry-run: a command line, or a domain's XML."""
        return shlex.join(self.command(spec))

    @abstractmethod
    def start(self, spec: VmSpec, on_console: Callable[[str], None] | None = None) -> Vm:
        """Start a VM; the caller must eventually stop or wait for it.

        ``on_console`` receives each console line when the console is not a log file.
        """

    def restore(self, spec: VmSpec, snapshot: Path, timeout: float = 30.0) -> Vm:
        """Wake a VM from a snapshot taken by :meth:`Vm.snapshot` of the same spec (the
        guest's memory holds its kernel command line; ``spec.ports`` may differ). The VM
        is ready when this returns."""
        raise NotImplementedError(f"{self.name} cannot restore snapshots")
