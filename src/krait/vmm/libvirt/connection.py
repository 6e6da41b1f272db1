"""Reaching libvirt: the binding and its event loop, connections per host (kept and
retried), errors as krait's, and what a host must offer."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from krait.errors import ConfigError, VmError

log = logging.getLogger("krait")

DEFAULT_URI = "qemu:///system"
LOST_AFTER = 30.0  # a host that does not answer about a domain this long: given up


_events_lock = threading.Lock()
_events_running = False


def binding() -> Any:
    """The binding, with its event loop running (streams and keepalives need one)."""
    global _events_running
    try:
        import libvirt
    except ImportError:
        raise ConfigError("the libvirt backend needs libvirt's Python binding",
                          hint="install it: `pip install 'krait[libvirt]'` (with libvirt-dev "
                          "and pkg-config from apt), or use --backend qemu") from None
    with _events_lock:
        if not _events_running:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # exceptions only
            # Before any connection is opened; its thread runs for the process's life.
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_events, args=(libvirt,), daemon=True,
                             name="libvirt-events").start()
            _events_running = True
    return libvirt


def _run_events(libvirt: Any) -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def host_of(uri: str) -> str:
    """The host a URI names (``127.0.0.1`` for a local libvirtd)."""
    return urlsplit(uri).hostname or "127.0.0.1"


def is_local(uri: str) -> bool:
    """A libvirtd of this machine's, reached without a transport (qemu:///system); one
    over SSH is another host's, even at 127.0.0.1 (it is the SSH server's)."""
    parts = urlsplit(uri)
    return "+" not in parts.scheme and parts.hostname in (None, "", "localhost")


def error_message(error: Exception) -> str:
    text = getattr(error, "get_error_message", lambda: None)() or str(error)
    return " ".join(text.split())


_connections: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def lock_for(key: str) -> threading.Lock:
    """One lock per key (a host, a file on a host): one slow host holds up no other."""
    with _locks_lock:
        return _locks.setdefault(key, threading.Lock())


def connect(uri: str) -> Any:
    """One open connection per URI for this process (libvirt's are thread-safe), with
    keepalives: a host that goes silent is a failed call within seconds, not a hang."""
    libvirt = binding()
    with lock_for(uri):
        conn = _connections.get(uri)
        if conn is not None and conn.isAlive():
            return conn
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise VmError(f"cannot reach libvirt at {uri}: {error_message(e)}",
                          hint=_reach_hint(uri)) from None
        with contextlib.suppress(libvirt.libvirtError):  # drivers in this process have none
            conn.setKeepAlive(5, 3)
        _connections[uri] = conn
        return conn


def _reach_hint(uri: str) -> str:
    if uri.startswith("qemu+ssh://"):
        return (f"check that `ssh {host_of(uri)}` works without a password and that "
                "libvirtd runs there")
    return "start libvirtd (and virtlogd), or use --backend qemu"


def call(uri: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A libvirt call whose failure is a VmError naming the host."""
    libvirt = binding()
    try:
        return fn(*args)
    except libvirt.libvirtError as e:
        raise VmError(f"libvirt at {uri} could not {what}: {error_message(e)}") from None


_checked: set[tuple[str, str]] = set()


def check_host(uri: str, conn: Any, accel: str) -> None:
    """Refuse a libvirt host that cannot run krait's VM (a driver that is not QEMU's, no
    QEMU for x86_64, no microvm), once per host and accelerator, before anything is
    copied there."""
    if (uri, accel) in _checked:
        return
    libvirt = binding()
    kind = "qemu" if accel == "tcg" else "kvm"
    hint = ("install QEMU there (`apt-get install qemu-system-x86`) and restart libvirtd, "
            "or pick another host")
    try:
        driver = conn.getType()
        if driver != "QEMU":
            raise VmError(f"libvirt at {uri} drives {driver}, not QEMU", hint=hint)
        conn.getDomainCapabilities(None, "x86_64", "microvm", kind)
    except libvirt.libvirtError as e:
        raise VmError(f"libvirt at {uri} has no QEMU that runs a microvm ({kind}): "
                      f"{error_message(e)}", hint=hint) from None
    _checked.add((uri, accel))
