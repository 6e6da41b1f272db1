"""The QEMU backend: microvm, virtio-mmio devices, serial console, user-mode network."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from krait.config.settings import Service
from krait.errors import VmError
from krait.guest import protocol
from krait.guest.tunnel import Tunnel
from krait.paths import write_atomically
from krait.run import popen
from krait.vmm import qmp
from krait.vmm.base import (
    BOOT_DISK,
    CONTROL_SOCKET,
    QMP_SOCKET,
    TUNNEL_SOCKET,
    Backend,
    VmSpec,
    VmStatus,
)
from krait.vmm.child import child_status, kill_child, stop_child, workdir_of
from krait.vmm.options import (
    Accelerator,
    Chardev,
    Cpu,
    Device,
    DirectBoot,
    Drive,
    Flag,
    GdbStub,
    Incoming,
    Machine,
    Memory,
    Monitor,
    Object,
    QemuCommand,
    RamFile,
    Sandbox,
    Serial,
    UserNetwork,
)
from krait.vmm.ports import check_port_free, hold_port
from krait.vmm.reporting import ChildVm
from krait.vmm.volumes import VolumeLock

log = logging.getLogger("krait")
QEMU = "qemu-system-x86_64"
# Who QEMU runs as when krait runs as root (-runas): not root, and owner of nothing.
UNPRIVILEGED_USER = "nobody"
NETDEV = "net0"  # the guest's one network: user-mode, its ports forwarded by name


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if not path:
        raise VmError(f"{QEMU} is not installed",
                      hint="install it with `apt-get install qemu-system-x86` (or `make deps`)")
    return path


class QemuBackend(Backend):
    name = "qemu"
    snapshots = True

    def status(self, ref: str, detail: bool = True) -> VmStatus:
        seen = child_status(ref)
        workdir = workdir_of(ref)
        if seen.running and detail and workdir and (workdir / QMP_SOCKET).exists():
            with contextlib.suppress(VmError, OSError):
                if qmp.query_status(workdir / QMP_SOCKET, timeout=1.0) in (
                        "paused", "postmigrate", "inmigrate", "prelaunch"):
                    return replace(seen, paused=True)
        return seen

    def remove(self, ref: str) -> None:
        kill_child(ref)

    def stop(self, ref: str, grace: float = 10.0) -> None:
        stop_child(ref, grace)  # a STOP on the control port, as Vm.request_stop sends

    def build_command(self, spec: VmSpec, workdir: Path, forward_later: bool = False
                      ) -> QemuCommand:
        """``forward_later``: the ports are forwarded once the app is ready (over QMP, see
        QemuVm._on_ready), as krait runs it; else on the command line, as QEMU would run
        the VM by itself (--dry-run)."""
        tcg = spec.accel.name == "tcg"
        only = spec.qemu
        profile = spec.machine  # the machine, as libvirt's domain renders it too
        # Always a pipe to krait, which bounds and rotates the log (see vmm.console).
        console = Chardev("con", "stdio", (("signal", False),))
        machine = Machine(profile.type, (("acpi", profile.acpi),))
        if spec.qemu.ram_file is not None:
            machine = Machine(profile.type, (*machine.props, ("memory-backend", "ram")))
        command = QemuCommand(QEMU).add(
            machine,
            Accelerator(spec.accel.name, tb_size_mib=profile.tcg_cache_mib if tcg else None),
            Cpu(profile.cpu(tcg), spec.vcpus),
            Memory(spec.memory),
            *([RamFile(only.ram_file, spec.memory, only.ram_shared)] if only.ram_file else []),
            Flag("-nodefaults"),
            Flag("-no-user-config"),
            Flag("-nographic"),
            # The guest resets to end; -no-reboot turns that into QEMU exiting.
            Flag("-no-reboot"),
            Sandbox(runas=UNPRIVILEGED_USER if os.geteuid() == 0 else None),
            DirectBoot(spec.kernel, spec.cmdline),
            *(Drive(f"disk-{d.name}", d.path, d.readonly, device=profile.disk_device)
              for d in spec.disks),
            *([Drive("disk-boot", workdir / BOOT_DISK, device=profile.disk_device)]
              if spec.boot_settings else []),
            *(Drive(f"volume-{i}", v.path.resolve(), v.readonly, cache="writeback",
                    device=profile.disk_device) for i, v in enumerate(spec.volumes)),
            console,
            Serial("con"),
            Chardev("ctl", "socket", (("path", workdir / CONTROL_SOCKET), ("server", True),
                                      ("wait", False))),
            Device("isa-serial", (("chardev", "ctl"), *profile.control_uart)),
            # Deny by default: the guest reaches only the services it declared.
            UserNetwork(NETDEV, () if forward_later else spec.ports, restrict=True,
                        tunnel=workdir / TUNNEL_SOCKET if spec.services else None),
            Device(profile.net_device, (("netdev", NETDEV),)),
            Object("rng-random", "rng0", (("filename", profile.rng_source),)),
            Device("virtio-rng-device", (("rng", "rng0"),)),
        )
        if spec.qemu.qmp or (forward_later and spec.ports):
            command.add(Monitor(workdir / QMP_SOCKET))
        if spec.qemu.incoming:
            command.add(Incoming())
        if spec.qemu.gdb_port:
            command.add(GdbStub(spec.qemu.gdb_port))
        return command

    def command(self, spec: VmSpec) -> list[str]:
        return self.build_command(spec, spec.workdir or Path("WORKDIR")).argv()

    def start(self, spec: VmSpec, on_console: Callable[[str], None] | None = None) -> QemuVm:
        find_qemu()
        if spec.qemu.gdb_port:
            check_port_free("127.0.0.1", spec.qemu.gdb_port)
        owned = spec.workdir is None
        workdir = spec.workdir or Path(tempfile.mkdtemp(prefix="krait-vm-"))
        workdir.mkdir(parents=True, exist_ok=True)
        # A clone's app listens already (in its snapshot): its ports are forwarded as it
        # starts, which spares a QMP exchange on the wake path.
        later = not spec.qemu.incoming
        argv = self.build_command(spec, workdir, forward_later=later).argv()
        if spec.boot_settings:
            write_atomically(workdir / BOOT_DISK, spec.boot_settings, mode=0o600)
        lock = VolumeLock(spec.volumes)  # a read-write volume is one VM's at a time
        tunnel = None
        held: list[socket.socket] = []
        # Not spawn(): the VM outlives this call; QemuVm ends it (stop, kill), and every
        # VM is started in a booted() block or by a driver that ends all of its VMs.
        try:
            # Taken now, so that the VM does not boot only to find them gone.
            for forward in spec.ports:
                if later:
                    held.append(hold_port(forward.host_addr, forward.host))
                else:
                    check_port_free(forward.host_addr, forward.host)
            # QEMU connects to it as it starts: it must be listening first.
            tunnel = _listen(workdir / TUNNEL_SOCKET) if spec.services else None
            proc = popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except BaseException:
            for each in held:
                each.close()
            if tunnel is not None:
                tunnel.close()
            lock.release()
            raise
        return QemuVm(spec, proc, workdir, owned, on_console, tunnel, lock, held)

    def restore(self, spec: VmSpec, state: Path, timeout: float = 30.0) -> QemuVm:
        """Wake a clone: guest RAM mapped privately from ``spec.qemu.ram_file``, its
        devices' state loaded from ``state``; ready (the guest confirmed) when this
        returns."""
        vm = self.start(spec.with_qemu(qmp=True, incoming=True))
        try:
            qmp.load_state(vm.workdir / QMP_SOCKET, state, timeout)
            vm.wake()
        except VmError:
            vm.kill()
            vm.wait()
            raise
        return vm


def _listen(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX)
    old = os.umask(0o077)  # 0600 from the start: nobody else may speak for the guest
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(1)
    return server


def service_connector(services: tuple[Service, ...]) -> Callable[[str], socket.socket]:
    """The host's end of a tunnel: a declared name to a connection; any other name, and
    any service that does not answer within 5 s, is an OSError (the guest's connection
    is closed)."""
    by_name = {s.name: s for s in services}

    def connect(name: str) -> socket.socket:
        service = by_name.get(name)
        if service is None:
            raise OSError(f"no service {name!r} declared")
        conn = socket.create_connection((service.host, service.port), timeout=5)
        conn.settimeout(None)
        return conn

    return connect


class QemuVm(ChildVm):
    vmm_name = "QEMU"

    def __init__(self, spec: VmSpec, proc: subprocess.Popen[bytes], workdir: Path,
                 owned_workdir: bool, on_console: Callable[[str], None] | None = None,
                 tunnel: socket.socket | None = None,
                 volume_lock: VolumeLock | None = None,
                 held_ports: list[socket.socket] | None = None) -> None:
        super().__init__(spec, proc, on_console, workdir)
        self.workdir = workdir
        self._held_ports = held_ports or []
        if self._held_ports:
            self._threads.append(threading.Thread(target=qmp.warm_up, daemon=True))
        self._owned = owned_workdir
        self._tunnel_server = tunnel
        self._volume_lock = volume_lock
        self._tunnel: Tunnel | None = None
        if tunnel is not None:
            self._threads.append(threading.Thread(target=self._carry, args=(tunnel,),
                                                  daemon=True))
        self._start()

    def _carry(self, server: socket.socket) -> None:
        """The guest's connections to its services, for as long as QEMU runs (it
        connects once, as it starts)."""
        server.settimeout(0.1)
        while self.proc.poll() is None:
            try:
                stream, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            stream.settimeout(None)
            with self._lock:
                self._tunnel = Tunnel(stream, service_connector(self.spec.services),
                                      log=self._tunnel_log)
            self._tunnel.serve()
            return

    def _on_ready(self) -> None:
        """Forward the ports now that the app listens. Not before: a connection QEMU
        accepts while the guest cannot answer yet is held by its user-mode network, which
        resends its SYN to the guest after 1 s, 3 s, 7 s...: a client that came early
        would wait seconds past the boot. Until now the ports refuse connections (as a
        process's do until it listens), and a client that tries again gets in at once."""
        if not self._held_ports:
            return  # forwarded as QEMU started (a clone), or none to forward
        for held, forward in zip(self._held_ports, self.spec.ports, strict=True):
            held.close()  # QEMU binds it next; nobody else had it meanwhile
            try:
                qmp.add_forward(self.workdir / QMP_SOCKET, NETDEV, forward.render())
            except VmError as e:
                log.error("krait: %s: %s; stopping the VM", self.spec.name, e.message)
                self.kill()
                return

    def _tunnel_log(self, line: str) -> None:
        log.warning("%s: %s", self.spec.name, line)

    def _open_control(self) -> socket.socket | None:
        path = self.workdir / CONTROL_SOCKET
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(str(path))
                return s
            except OSError:
                s.close()
                time.sleep(0.005)
        return None

    def save(self, state: Path) -> None:
        only = self.spec.qemu
        if not (only.qmp and only.ram_file and only.ram_shared):
            raise VmError("only a VM started as a template (a shared RAM file and QMP) can be "
                          "saved")
        qmp.save_state(self.workdir / QMP_SOCKET, state)

    def pause(self) -> None:
        qmp.pause(self.workdir / QMP_SOCKET)

    def resume(self) -> None:
        """Run a paused guest again, and set its clock (not waited for: a resume must be
        quick, and a request that comes first sees the time it was paused at)."""
        qmp.resume(self.workdir / QMP_SOCKET)
        self.send_control(f"{protocol.WAKE} {time.time_ns()}")

    def wake(self, timeout: float = 2.0) -> None:
        """Tell a clone what time it is (its clock stood still in the snapshot) and give it
        fresh entropy (every clone of a snapshot woke with the same random state); it
        confirms with "ready". One that does not is a VmError: it must not serve."""
        self._ready.clear()
        message = f"{protocol.WAKE} {time.time_ns()} {secrets.token_hex(32)}"
        if not (self.send_control(message) and self.wait_ready(timeout)):
            raise VmError(f"the guest did not confirm its wake in {timeout:g}s")

    def _release(self) -> None:
        for held in self._held_ports:
            held.close()
        with self._lock:
            if self._tunnel is not None:
                self._tunnel.close()
        if self._tunnel_server is not None:
            self._tunnel_server.close()
        if self._volume_lock is not None:
            self._volume_lock.release()
        if self._owned:
            shutil.rmtree(self.workdir, ignore_errors=True)
