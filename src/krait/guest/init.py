"""krait's PID 1: prepare the few things a Python program needs, run the app, power off.

The kernel starts ``/init`` (a two-line script) which calls :func:`main`. Order of
work, each step as cheap as we can make it under emulation:

1. refuse to act unless we are PID 1 *and* the kernel command line carries
   krait's marker (a container's PID 1 has the host's command line, without it);
2. mount the image's other layers (read-only erofs disks; the kernel mounted the base
   layer as the root itself), /dev/shm and a small /tmp;
3. the network was already configured by the kernel (``ip=`` on the command line);
   entropy is ready because the host passes ``random.trust_cpu=on`` and a virtio-rng;
4. import the app and run it as its kind says; print one readiness line;
5. report the exit status on the control port and reset the machine (QEMU runs
   with ``-no-reboot``, so a reset ends it).
"""

from __future__ import annotations

# Every import here is paid for at each boot, under emulation: keep to builtins and
# what is needed anyway (ctypes for mount/reboot); import the rest where it is used.
import _signal
import _thread
import ctypes
import marshal
import os
import sys
import time

from krait.guest import confine, protocol

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


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


# <linux/random.h>: add entropy (and count it), then reseed the kernel's generator now.
RNDADDENTROPY, RNDRESEEDCRNG = 0x40085203, 0x5207


def _woke(words: list[str]) -> None:
    """A resume or a snapshot wake: the clock; for a clone, fresh randomness everywhere a
    generator was seeded before the snapshot (the kernel's, Python's random, OpenSSL's)."""
    _set_clock(int(words[0]))
    if len(words) < 2:
        return
    seed = bytes.fromhex(words[1])
    import fcntl

    fd = os.open("/dev/urandom", os.O_WRONLY)
    try:
        info = (len(seed) * 8).to_bytes(4, "little") + len(seed).to_bytes(4, "little") + seed
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)
    if "random" in sys.modules:
        sys.modules["random"].seed()  # from os.urandom: the kernel's, reseeded above
    if "ssl" in sys.modules:
        sys.modules["ssl"].RAND_add(seed, len(seed))


def _is_krait_guest() -> tuple[bool, str]:
    if os.getpid() != 1:
        return False, ""
    if not os.path.exists("/proc/self"):
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open("/proc/cmdline") as f:
        cmdline = f.read()
    return protocol.MARKER in cmdline.split(), cmdline


def _set_clock(ns: int) -> None:
    """Set the wall clock (CLOCK_REALTIME); the host sends it after a snapshot wake."""
    _libc.clock_settime(0, ctypes.byref(_Timespec(ns // 1_000_000_000, ns % 1_000_000_000)))


class Control:
    """The control port (second serial line): one line per message."""

    def __init__(self, path: str = protocol.CONTROL_TTY) -> None:
        try:
            # Canonical tty mode suits a line protocol; the host ignores the echo.
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            self.fd = -1  # no control port (another VMM): the console still works

    def send(self, message: str) -> None:
        if self.fd >= 0:
            os.write(self.fd, (message + "\n").encode())

    def watch(self, on_stop: Any) -> None:
        """Call ``on_stop`` when the host asks us to stop."""
        if self.fd < 0:
            return

        def read() -> None:
            buf = b""
            while True:
                try:
                    chunk = os.read(self.fd, 64)
                except OSError:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    text = line.strip().decode(errors="replace")
                    if text == protocol.STOP:
                        on_stop()
                    elif text.startswith(protocol.WAKE + " "):
                        _woke(text.split()[1:])
                        if len(text.split()) > 2:
                            self.send(protocol.READY)

        _thread.start_new_thread(read, ())


# When each step of the boot was done, in seconds since the kernel started (monotonic);
# sent to the host after the readiness signal, for `krait bench boot --timeline`.
TIMELINE: dict[str, float] = {}


def _mark(step: str) -> None:
    TIMELINE[step] = time.monotonic()


def _exec_time() -> float | None:
    """When the kernel ran /init: the time stamp of its "Run /init as init process" in
    the kernel's log (seconds since boot); read after the app is ready."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        while True:
            try:
                record = os.read(fd, 4096).decode(errors="replace")
            except BlockingIOError:
                return None  # the end of the log
            except OSError:  # EPIPE: a record was overwritten; go on with the next
                continue
            head, _, text = record.partition(";")
            if text.startswith("Run ") and "as init process" in text:
                return int(head.split(",")[2]) / 1e6
    finally:
        os.close(fd)


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
            os.environ[f"KRAIT_VOLUME_{target.upper()}"] = device
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
    # Writable, so never executable: nothing the app writes can be run.
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=25%,mode=1777")
    # POSIX semaphores and shared memory (multiprocessing's locks and queues) live here.
    os.mkdir("/dev/shm", 0o1777)
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=25%,mode=1777")
    _mount("none", "/", "", MS_REMOUNT | MS_RDONLY)


def _load_app(config: dict[str, Any]) -> Any:
    sys.path[:0] = [protocol.APP_DIR, protocol.PACKAGES_DIR]
    os.chdir(protocol.APP_DIR)
    module_name, _, attr = config["entry"].partition(":")
    module = __import__(module_name, fromlist=["_"])
    return getattr(module, attr)


def _run_main(target: Any) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    _signal.signal(_signal.SIGTERM, on_term)  # _signal: the signal module imports enum
    result = target()
    return result if isinstance(result, int) else 0


def _ready_line(config: dict[str, Any]) -> str:
    ports = ",".join(str(p) for p in config.get("ports", ()))
    where = f" on port {ports}" if ports else ""
    return f"krait: {config['name']} ready{where} ({time.monotonic():.3f}s since boot)"


def _memory_line() -> str:
    """What the guest uses once the app is up (MemTotal - MemAvailable), for benchmarks."""
    try:
        with open("/proc/meminfo") as f:
            info = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f)}
        used = (info["MemTotal"] - info["MemAvailable"]) / 1024
        return f"krait: memory in use {used:.1f} MiB of {info['MemTotal'] / 1024:.1f} MiB"
    except (OSError, KeyError, ValueError):
        return "krait: memory in use unknown"


def run_app(config: dict[str, Any], control: Control) -> int:
    """Import and run the app; return its exit status (tracebacks go to the console)."""
    try:
        target = _load_app(config)
        _mark("imported")
        kind = config["kind"]
        control.watch(lambda: os.kill(os.getpid(), _signal.SIGTERM))

        def ready() -> None:
            _mark("ready")
            print(_ready_line(config), flush=True)
            control.send(protocol.READY)
            # After READY: not on the boot-time path.
            if (ran := _exec_time()) is not None:
                TIMELINE["exec"] = ran
            control.send(protocol.TIMELINE + " " + " ".join(
                f"{k}={v:.4f}" for k, v in sorted(TIMELINE.items(), key=lambda kv: kv[1])))
            print(_memory_line(), flush=True)

        if kind == "main":
            ready()
            return _run_main(target)
        port = config["ports"][0]
        server = config.get("server", "builtin")
        if server != "builtin":  # uvicorn, waitress: from the app's environment
            from krait.guest import servers

            return servers.serve(server, target, port, ready)
        from krait.guest import http

        limits = http.Limits.for_guest(config.get("max_body", http.Limits().max_body))
        if kind == "asgi":
            return http.serve_asgi(target, port, ready, limits)
        return http.serve_wsgi(target, port, ready, limits)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr, flush=True)
        return 1
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        control.send(f"{protocol.CRASH} 1")
        return 1


def _idna_fallback(name: str) -> Any:
    """socket.getaddrinfo() encodes every str host with the "idna" codec, which the codec
    registry imports lazily, so a trace never sees it. When the image lacks
    encodings.idna (and unicodedata, 1 MB), ASCII host names still work."""
    if name != "idna":
        return None
    import codecs

    def encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
        return text.encode("ascii", errors), len(text)

    def decode(data: Any, errors: str = "strict") -> tuple[str, int]:
        return bytes(data).decode("ascii", errors), len(data)

    return codecs.CodecInfo(encode, decode, name="idna")


def _power_off_on(error: BaseException) -> NoReturn:
    """Set-up failed before the app could run: say why, and end the VM (never return:
    PID 1 exiting would panic the kernel)."""
    print(f"krait: the guest could not start the app: {type(error).__name__}: {error}",
          file=sys.stderr, flush=True)
    Control().send(f"{protocol.EXIT} 1")
    _libc.reboot(LINUX_REBOOT_CMD_RESTART)
    while True:
        time.sleep(60)


def main() -> None:
    _mark("main")
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
    _mark("mounted")
    os.environ.update(config.get("env", {}))
    os.environ.update(boot.get("env", {}))
    import codecs

    codecs.register(_idna_fallback)  # consulted only if encodings.idna is not in the image
    from krait.guest import missing

    missing.install(config.get("absent", ()))  # names a module the trace missed
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
    _mark("confined")
    control = Control()
    status = run_app(config, control)
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
        # (the kernel would panic), whatever went wrong above.
        _libc.reboot(LINUX_REBOOT_CMD_RESTART)
    time.sleep(60)  # reboot() does not return; this is only for a VMM that ignores it
