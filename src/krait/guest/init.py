"""krait's PID 1: prepare the few things a Python program needs, run the app, power off.

The kernel starts ``/init`` (a two-line script) which calls :func:`main`. Order of
work, each step as cheap as we can make it under emulation:

1. refuse to act unless we are PID 1 *and* the kernel command line carries
   krait's marker (a container's PID 1 has the host's command line, without it);
2. mount the image's other layers (read-only erofs disks; the kernel mounted the base
   layer as the root itself), /dev/shm and a small /tmp;
3. the network was already configured by the kernel (``ip=`` on the command line);
   entropy is ready because the host passes ``random.trust_cpu=on`` and a virtio-rng;
4. fork: the app runs in the child (see :mod:`krait.guest.reaper`), imported and run
   as its kind says, and prints one readiness line; PID 1 waits for it and reaps;
5. report the app's exit status on the control port and reset the machine (QEMU runs
   with ``-no-reboot``, so a reset ends it).
"""

from __future__ import annotations

# Every import here is paid for at each boot, under emulation: keep to builtins and
# what is needed anyway (ctypes for mount/reboot); import the rest where it is used.
import ctypes
import errno
import marshal
import os
import sys
import time

from krait.guest import app, confine, protocol, reaper
from krait.guest.app import Control, mark

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
LINUX_REBOOT_CMD_RESTART = 0x01234567

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags,
                   data.encode() if data else None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def _is_krait_guest() -> tuple[bool, str]:
    if os.getpid() != 1:
        return False, ""
    if not os.path.exists("/proc/self"):
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open("/proc/cmdline") as f:
        cmdline = f.read()
    return protocol.MARKER in cmdline.split(), cmdline


def _mount_layers(cmdline: str) -> None:
    """The image's other layers, in the order the host attached them (/dev/vdb, ...)."""
    for arg in cmdline.split():
        key, _, value = arg.partition("=")
        if key == protocol.DISKS_PARAM:
            for i, name in enumerate(value.split(",")):
                _mount(f"/dev/vd{chr(ord('b') + i)}", protocol.MOUNTS[name], "erofs",
                       MS_RDONLY | MS_NOSUID | MS_NODEV)


# Read-write volumes, frozen at the end so that they are clean on the disk (see below).
_WRITABLE: list[str] = []
FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)


def _freeze_volumes() -> None:
    """Before the reset: the app may not unmount (its seccomp filter refuses it, and so it
    does PID 1's), but freezing an ext4 file system flushes its journal and marks it
    clean, so it mounts read-only next time. A VM killed instead is replayed by the next
    read-write mount."""
    import fcntl

    for target in _WRITABLE:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            finally:
                os.close(fd)
        except OSError as e:
            print(f"krait: could not flush the volume at {target}: {e}", file=sys.stderr)


def _mount_volumes(volumes: Any) -> None:
    """Data volumes where the host said, before the app (and its confinement) starts;
    a raw one is only named in the app's environment."""
    mnt = False
    for volume in volumes:
        device, target = volume["device"], volume["target"]
        if volume["raw"]:
            os.environ[protocol.volume_env(target)] = device
            continue
        if target.startswith("/mnt/"):
            if not mnt:  # the root is read-only: mount points live on a small tmpfs
                _mount("tmpfs", "/mnt", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       "size=64k,mode=0755")
                mnt = True
            os.mkdir(target)
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if volume["readonly"] else 0)
        try:
            _mount(device, target, "ext4", flags)
        except OSError as e:
            if volume["readonly"] and e.errno == 30:  # EROFS: its journal needs replaying
                raise OSError(e.errno, f"the volume for {target} was not cleanly unmounted "
                              "(a VM using it was killed): attach it read-write once, and "
                              "its journal is replayed") from None
            raise
        if not volume["readonly"]:
            _WRITABLE.append(target)


def _prepare_system(cmdline: str) -> None:
    if not os.path.exists("/dev/null"):  # an initramfs: no /dev yet
        _mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    else:  # a root disk: the kernel mounted /dev itself, executable
        _mount("none", "/dev", "", MS_REMOUNT | MS_NOSUID | MS_NOEXEC)
    _mount_layers(cmdline)
    # Terminals the app opens itself (os.openpty, pty.fork: process managers, tools that
    # want a tty): the kernel's devpts, where /dev/ptmx finds its terminals. A kernel of
    # the user's without it (--kernel) has no terminals, as before.
    if not os.path.isdir("/dev/pts"):
        os.mkdir("/dev/pts", 0o755)
    try:
        _mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666")
    except OSError as e:
        if e.errno != errno.ENODEV:
            raise
    # Writable, so never executable: nothing the app writes can be run.
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=25%,mode=1777")
    # POSIX semaphores and shared memory (multiprocessing's locks and queues) live here.
    os.mkdir("/dev/shm", 0o1777)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=25%,mode=1777")
    _mount("none", "/", "", MS_REMOUNT | MS_RDONLY)


def _power_off_on(error: BaseException) -> NoReturn:
    """Set-up failed before the app could run: say why, and end the VM (never return:
    PID 1 exiting would panic the kernel)."""
    print(f"krait: the guest could not start the app: {type(error).__name__}: {error}",
          file=sys.stderr, flush=True)
    Control.serial().send(f"{protocol.EXIT} 1")
    _libc.reboot(LINUX_REBOOT_CMD_RESTART)
    while True:
        time.sleep(60)


def main() -> None:
    mark("main")
    ok, cmdline = _is_krait_guest()
    if not ok:
        print("krait: not a krait guest (not PID 1, or no krait.guest=1 on the kernel "
              "command line); doing nothing", file=sys.stderr)
        sys.exit(2)
    try:
        _prepare_system(cmdline)
        with open(protocol.CONFIG_PATH, "rb") as f:
            config = marshal.load(f)
        device = protocol.boot_device(cmdline)
        boot: dict[str, Any] = {}
        if device:
            with open(device, "rb") as f:
                boot = protocol.decode_boot(f.read(protocol.MAX_BOOT_SETTINGS))
        _mount_volumes(boot.get("volumes", ()))
    except (OSError, ValueError, EOFError) as e:
        _power_off_on(e)
    mark("mounted")
    # The kernel starts /init with HOME=/, which is read-only here: programs that keep
    # files in ~ (gunicorn's control socket, caches) get the writable /tmp instead.
    if os.environ.get("HOME", "/") == "/":
        os.environ["HOME"] = "/tmp"
    app.prepare(config, boot)
    if boot.get("connect"):
        from krait.guest import tunnel

        try:
            tunnel.serve_in_guest(boot["connect"])
        except OSError as e:
            _power_off_on(e)
    try:
        confine.confine(_libc)
    except OSError as e:  # a kernel of the user's without seccomp (--kernel)
        print(f"krait: the app runs unconfined: {e}", file=sys.stderr, flush=True)
    mark("confined")
    control = Control.serial()
    profile = bool(boot.get("profile"))
    status = reaper.run_as_child(lambda: app.run_app(config, control, in_vm=True,
                                                     profile=profile))
    try:
        _freeze_volumes()
        sys.stdout.flush()
        sys.stderr.flush()
        control.send(f"{protocol.EXIT} {status & 0xFF}")  # as a process's status is
        if control.fd >= 0:
            import termios

            termios.tcdrain(control.fd)  # the status must leave the UART before the reset
    finally:
        # With -no-reboot (and reboot=t) a reset ends QEMU; PID 1 must never just exit
        # (the kernel would panic), whatever went wrong above or in the app.
        _libc.reboot(LINUX_REBOOT_CMD_RESTART)
    time.sleep(60)  # reboot() does not return; this is only for a VMM that ignores it
