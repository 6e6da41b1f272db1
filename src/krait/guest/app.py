"""The half of krait's guest runtime that runs the app, whatever started it: PID 1 in
a VM (krait.guest.init, which mounts, confines and resets around it), or a plain host
process (krait.guest.process, for `krait run --target process`).

It speaks to the host over one channel, a file descriptor that is a serial line in a VM
and a socket pair for a process: the readiness line, the boot timeline and the exit
status go out, stop and wake come in.
"""

from __future__ import annotations

# Every import here is paid for at each boot, under emulation (see init).
import _signal
import _thread
import ctypes
import os
import sys
import time

from krait.guest import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_STARTED = time.monotonic()


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


# <linux/random.h>: add entropy (and count it), then reseed the kernel's generator now.
RNDADDENTROPY, RNDRESEEDCRNG = 0x40085203, 0x5207


def _set_clock(ns: int) -> None:
    """Set the wall clock (CLOCK_REALTIME); the host sends it after a snapshot wake."""
    _libc.clock_settime(0, ctypes.byref(_Timespec(ns // 1_000_000_000, ns % 1_000_000_000)))


class Control:
    """The channel to the host, one line per message: the control port (a VM's second
    serial line) or one end of a socket pair (a process); -1 for none."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def serial(cls, path: str = protocol.CONTROL_TTY) -> Control:
        try:
            # Canonical tty mode suits a line protocol; the host ignores the echo.
            return cls(os.open(path, os.O_RDWR | os.O_NOCTTY))
        except OSError:
            return cls(-1)  # no control port (another VMM): the console still works

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


def mark(step: str) -> None:
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


def _load_app(config: dict[str, Any]) -> Any:
    app_dir, packages_dir = config.get("dirs", (protocol.APP_DIR, protocol.PACKAGES_DIR))
    # The app's folders (its root, and src/ in a src layout), its packages; krait's
    # runtime is already on the path.
    sys.path[:0] = [*(os.path.join(app_dir, p) if p else app_dir
                      for p in config.get("paths", ("",))), packages_dir]
    os.chdir(app_dir)
    module_name, _, attr = config["entry"].partition(":")
    module = __import__(module_name, fromlist=["_"])
    return getattr(module, attr)


def _run_main(target: Any) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    _signal.signal(_signal.SIGTERM, on_term)  # _signal: the signal module imports enum
    result = target()
    return result if isinstance(result, int) else 0


def listening_ports() -> set[int]:
    """The TCP ports something in this machine (or network namespace) listens on, as the
    kernel reports them."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rpartition(":")[2], 16))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return ports


def _when_listening(ports: list[int], ready: Any) -> None:
    """Call ``ready`` once the app listens on every port it declares: a ``main`` app that
    starts its own server (uvicorn.run, gunicorn) says nothing when it is up, but the
    kernel knows."""
    def watch() -> None:
        while not set(ports) <= listening_ports():
            time.sleep(0.01)
        ready()

    _thread.start_new_thread(watch, ())


def _ready_line(config: dict[str, Any], in_vm: bool) -> str:
    ports = ",".join(str(p) for p in config.get("ports", ()))
    where = f" on port {ports}" if ports else ""
    if not in_vm:  # a process on the host (--target process): since it started
        return f"krait: {config['name']} ready{where} ({time.monotonic() - _STARTED:.3f}s)"
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


def _plain_signals() -> None:
    """In a child the app forks (multiprocessing, os.fork): SIGTERM kills, as in any
    process. The handlers krait set for the VM (the server's graceful stop, through
    asyncio's wakeup descriptor) would otherwise be inherited, and Process.terminate()
    and a Pool's clean-up would wait for a child that never ends."""
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)


def run_app(config: dict[str, Any], control: Control, in_vm: bool = False,
            profile: bool = False) -> int:
    """Import and run the app; return its exit status (tracebacks go to the console).
    ``in_vm``: in a krait guest, where the boot timeline and memory are the app's.
    ``profile``: count where it spends its CPU once it is ready, and print that when it
    ends (krait.guest.profile)."""
    os.register_at_fork(after_in_child=_plain_signals)
    profiled = None
    try:
        target = _load_app(config)
        mark("imported")
        if profile:  # before the server starts its threads: each is profiled
            from krait.guest import profile as profiler

            profiled = profiler.start(*config.get("dirs", (protocol.APP_DIR,
                                                           protocol.PACKAGES_DIR)))
        kind = config["kind"]
        control.watch(lambda: os.kill(os.getpid(), _signal.SIGTERM))

        def ready() -> None:
            mark("ready")
            print(_ready_line(config, in_vm), flush=True)
            control.send(protocol.READY)
            if profiled is not None:
                profiled.restart()  # serving is what is measured, not starting
            if not in_vm:
                return  # a process on the host: no boot, and the host's memory is not ours
            # After READY: not on the boot-time path.
            if (ran := _exec_time()) is not None:
                TIMELINE["exec"] = ran
            control.send(protocol.TIMELINE + " " + " ".join(
                f"{k}={v:.4f}" for k, v in sorted(TIMELINE.items(), key=lambda kv: kv[1])))
            print(_memory_line(), flush=True)

        if kind == "main":
            if config.get("ports"):  # a server of the app's own: ready once it listens
                _when_listening(config.get("app_ports") or config["ports"], ready)
            else:
                ready()
            return _run_main(target)
        # A process on the host (--target process) listens where the host wants it.
        port, host = config["ports"][0], config.get("host", "0.0.0.0")
        server = config.get("server", "builtin")
        if server != "builtin":  # uvicorn, waitress: from the app's environment
            from krait.guest import servers

            return servers.serve(server, target, port, ready, host)
        from krait.guest import http

        limits = http.Limits.for_guest(config.get("max_body", http.Limits().max_body))
        if kind == "asgi":
            return http.serve_asgi(target, port, ready, limits, host)
        return http.serve_wsgi(target, port, ready, limits, host)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr, flush=True)
        return 1
    except BaseException:
        from krait.guest import missing

        missing.print_unhandled()
        control.send(f"{protocol.CRASH} 1")
        return 1
    finally:
        if profiled is not None:
            from krait.guest import profile as profiler

            print("\n".join(profiler.report_lines(profiled.stop())), flush=True)


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




def prepare(config: dict[str, Any], boot: dict[str, Any]) -> None:
    """The app's environment (baked, then this boot's) and the import hooks it needs."""
    os.environ.update(config.get("env", {}))
    os.environ.update(boot.get("env", {}))
    import codecs

    codecs.register(_idna_fallback)  # consulted only if encodings.idna is not in the image
    from krait.guest import missing

    missing.install(config.get("absent", ()))  # names a module the trace missed
