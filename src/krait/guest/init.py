"""krait's PID 1: prepare the few things a Python program needs, run the app, power off.

The kernel starts ``/init`` (a two-line script) which calls :func:`main`. Order of
work, each step as cheap as we can make it under emulation:

1. refuse to act unless we are PID 1 *and* the kernel command line carries
   krait's marker (a container's PID 1 has the host's command line, without it);
2. mount /proc, /dev (devtmpfs) and a small /tmp, then remount / read-only;
3. the network was already configured by the kernel (``ip=`` on the command line);
   entropy is ready because the host passes ``random.trust_cpu=on`` and a virtio-rng;
4. import the app and run it as its kind says; print one readiness line;
5. report the exit status on the control port and reset the machine (QEMU runs
   with ``-no-reboot``, so a reset ends it).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import termios
import threading
import time
import traceback
import tty
from typing import Any

from krait.guest import protocol

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


class Control:
    """The control port (second serial line): one line per message."""

    def __init__(self, path: str = protocol.CONTROL_TTY) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(self.fd, termios.TCSANOW)
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
                    if line.strip().decode(errors="replace") == protocol.STOP:
                        on_stop()

        threading.Thread(target=read, name="krait-control", daemon=True).start()


def _prepare_system() -> None:
    _mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=25%,mode=1777")
    _mount("rootfs", "/", "", MS_REMOUNT | MS_RDONLY)


def _load_app(config: dict[str, Any]) -> Any:
    sys.path[:0] = [protocol.APP_DIR, protocol.PACKAGES_DIR]
    os.chdir(protocol.APP_DIR)
    module_name, _, attr = config["entry"].partition(":")
    module = __import__(module_name, fromlist=["_"])
    return getattr(module, attr)


def _run_main(target: Any) -> int:
    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    result = target()
    return result if isinstance(result, int) else 0


def _ready_line(config: dict[str, Any]) -> str:
    ports = ",".join(str(p) for p in config.get("ports", ()))
    where = f" on port {ports}" if ports else ""
    return f"krait: {config['name']} ready{where} ({time.monotonic():.3f}s since boot)"


def run_app(config: dict[str, Any], control: Control) -> int:
    """Import and run the app; return its exit status (tracebacks go to the console)."""
    try:
        target = _load_app(config)
        kind = config["kind"]
        control.watch(lambda: os.kill(os.getpid(), signal.SIGTERM))

        def ready() -> None:
            print(_ready_line(config), flush=True)
            control.send(protocol.READY)

        if kind == "main":
            ready()
            return _run_main(target)
        from krait.guest import http

        port = config["ports"][0]
        if kind == "asgi":
            return http.serve_asgi(target, port, ready)
        return http.serve_wsgi(target, port, ready)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr, flush=True)
        return 1
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        control.send(f"{protocol.CRASH} 1")
        return 1


def main() -> None:
    ok, cmdline = _is_krait_guest()
    if not ok:
        print("krait: not a krait guest (not PID 1, or no krait.guest=1 on the kernel "
              "command line); doing nothing", file=sys.stderr)
        sys.exit(2)
    _prepare_system()
    with open(protocol.CONFIG_PATH) as f:
        config = json.load(f)
    boot = protocol.decode_boot(cmdline)
    os.environ.update(config.get("env", {}))
    os.environ.update(boot.get("env", {}))
    control = Control()
    status = run_app(config, control)
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(f"{protocol.EXIT} {status}")
    if control.fd >= 0:
        termios.tcdrain(control.fd)
    # With -no-reboot (and reboot=t), a reset ends QEMU; the status went over the control port.
    _libc.reboot(LINUX_REBOOT_CMD_RESTART)
    time.sleep(60)  # reboot() does not return; this is only for a VMM that ignores it
