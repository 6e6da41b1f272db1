"""Real hosts for the tests, each started by a test and stopped by it: a libvirtd (with
its virtlogd) on a socket of its own, an sshd on a loopback port with throwaway keys (the
"other host" of qemu+ssh is this machine reached over SSH), and Debian's docker-registry.

No systemd here: the daemons are started by hand, as a user without one would, and ended
by their PIDs. libvirtd runs in system mode (it needs root), keeps its socket, logs and
storage pool in the test's folders, and writes nothing to /etc/libvirt (the pool is
transient).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.run import spawn
from krait.vmm.ports import free_port

KVM = Path("/dev/kvm")


def _wait_for(check: object, what: str, proc: subprocess.Popen[bytes], log: Path,
              timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def _kvm_as_debian_sets_it() -> Iterator[None]:
    """libvirt's QEMU runs as libvirt-qemu (group kvm), and libvirtd probes QEMU again on
    every call when /dev/kvm is root's alone (this machine's, made without udev): Debian's
    udev rule makes it root:kvm 0660. Set so for the test, and put back after."""
    if not KVM.exists():
        yield
        return
    before = KVM.stat()
    if stat.S_IMODE(before.st_mode) & 0o060 == 0o060:
        yield
        return
    import grp

    os.chown(KVM, 0, grp.getgrnam("kvm").gr_gid)
    os.chmod(KVM, 0o660)
    try:
        yield
    finally:
        os.chown(KVM, before.st_uid, before.st_gid)
        os.chmod(KVM, stat.S_IMODE(before.st_mode))


@contextlib.contextmanager
def libvirtd_running(folder: Path) -> Iterator[str]:
    """A libvirtd (and virtlogd) of the test's; yields the URI that reaches it."""
    if os.geteuid() != 0:
        pytest.fail("the libvirt tests need root (libvirtd in system mode)")
    for tool in ("libvirtd", "virtlogd"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (run `make deps`)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{folder}"\nunix_sock_rw_perms = "0700"\n'
        f'unix_sock_ro_perms = "0700"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        f'log_outputs = "3:file:{folder}/libvirtd.log"\n')
    (folder / "virtlogd.conf").write_text(f'log_outputs = "3:file:{folder}/virtlogd.log"\n')
    # The domains' own logs: libvirt writes them in the system's log folder.
    Path("/var/log/libvirt/qemu").mkdir(parents=True, exist_ok=True)
    socket_path = folder / "libvirt-sock"
    with _kvm_as_debian_sets_it(), spawn(
            ["virtlogd", "-f", folder / "virtlogd.conf", "-p", folder / "virtlogd.pid"],
            grace=15, stdout=subprocess.DEVNULL):
        time.sleep(0.3)
        with spawn(["libvirtd", "-f", folder / "libvirtd.conf", "-p", folder / "libvirtd.pid"],
                   grace=15, stdout=subprocess.DEVNULL) as daemon:
            _wait_for(socket_path.exists, "libvirtd", daemon, folder / "libvirtd.log")
            uri = f"qemu:///system?socket={socket_path}"
            _forget_pool(uri)
            yield uri


def _forget_pool(uri: str) -> None:
    """libvirtd keeps a transient pool's state in /run across its restarts: an earlier
    run's "krait" pool is not this one's."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # exceptions only
    conn = libvirt.open(uri)
    with contextlib.suppress(libvirt.libvirtError):
        conn.storagePoolLookupByName("krait").destroy()
    conn.close()


@contextlib.contextmanager
def sshd_running(folder: Path) -> Iterator[tuple[int, Path]]:
    """An sshd on 127.0.0.1:PORT that lets root in with a key of its own; yields the port
    and the ssh command that uses that key and knows the host's."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "id_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(folder / name)], check=True)
    keys = folder / "authorized_keys"
    keys.write_text((folder / "id_key.pub").read_text())
    keys.chmod(0o600)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {keys}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPidFile {folder / 'sshd.pid'}\n")
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}")
    # libvirt runs `ssh`, which reads root's own ~/.ssh: a wrapper gives it the test's
    # key and known host instead (libvirt's command= takes the ssh to run).
    client = folder / "ssh_config"
    client.write_text(f"IdentityFile {folder / 'id_key'}\nUserKnownHostsFile {known}\n"
                      "StrictHostKeyChecking yes\nBatchMode yes\nIdentitiesOnly yes\n")
    wrapper = folder / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec ssh -F {client} "$@"\n')
    wrapper.chmod(0o700)
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    log = folder / "sshd.log"
    with log.open("wb") as out, spawn(["/usr/sbin/sshd", "-D", "-e", "-f", config], grace=15,
                                      stdout=out.fileno()) as proc:
        _wait_for(lambda: _listening(port), "sshd", proc, log)
        yield port, wrapper


def ssh_uri(port: int, ssh: Path, socket_path: str, user: str = "root") -> str:
    """qemu+ssh to the test's libvirtd, through the test's sshd."""
    return (f"qemu+ssh://{user}@127.0.0.1:{port}/system?socket={socket_path}"
            f"&command={ssh}&no_tty=1")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def registry_running(folder: Path, readonly: bool = False) -> Iterator[str]:
    """Debian's docker-registry on a loopback port, storing in ``folder``; yields
    HOST:PORT."""
    if not shutil.which("docker-registry"):
        pytest.fail("docker-registry is not installed (run `make deps`)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    maintenance = "  maintenance:\n    readonly:\n      enabled: true\n" if readonly else ""
    config = folder / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {folder / 'data'}\n{maintenance}"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    log = folder / "registry.log"
    with log.open("wb") as out, spawn(["docker-registry", "serve", config], grace=15,
                                      stdout=out.fileno()) as proc:
        _wait_for(lambda: _listening(port), "docker-registry", proc, log)
        yield f"127.0.0.1:{port}"


def pool_folder() -> Path:
    """The storage pool's folder for a test session: QEMU (libvirt-qemu) must reach its
    files, so not under pytest's root-only temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="krait-pool-", dir="/var/tmp"))
    folder.chmod(0o711)
    return folder
