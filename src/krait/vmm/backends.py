"""Backends by name: the one place that knows which exist.

    backend = get_backend(choose(flag, image_setting), uri)

The name comes from ``--backend``, else ``$KRAIT_BACKEND``, else the image's ``backend``
setting, else a host given with ``--on URI`` (which means libvirt), else QEMU.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from krait.errors import ConfigError
from krait.vmm.base import Backend

ENV = "KRAIT_BACKEND"
DEFAULT = "qemu"


def _qemu(uri: str | None) -> Backend:
    from krait.vmm.qemu import QemuBackend

    if uri is not None:
        raise ConfigError(f"--on {uri}: a host URI is for --backend libvirt")
    return QemuBackend()


def _libvirt(uri: str | None) -> Backend:
    from krait.vmm.libvirt import DEFAULT_URI, LibvirtBackend

    return LibvirtBackend(uri or DEFAULT_URI)


def _process(uri: str | None) -> Backend:
    from krait.vmm.process import ProcessBackend

    if uri is not None:
        raise ConfigError(f"{uri}: the process backend runs apps on this machine only")
    return ProcessBackend()


# Each backend's module is imported only when it is asked for (libvirt's binding is
# optional; the process backend is for development).
BACKENDS: dict[str, Callable[[str | None], Backend]] = {
    "qemu": _qemu, "libvirt": _libvirt, "process": _process}


def is_uri(text: str) -> bool:
    """A libvirt URI (``qemu:///system``, ``qemu+ssh://host/system``), not NAME=HOST:PORT."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()


def check_known(name: str, source: str = "backend") -> str:
    """``name``, if a backend of that name exists; else an error naming ``source``."""
    if name not in BACKENDS:
        raise ConfigError(f"{source} {name}: no such backend",
                          hint=f"use one of {', '.join(BACKENDS)}")
    return name


def choose(flag: str | None = None, setting: str | None = None,
           uris: tuple[str, ...] = ()) -> str:
    """The backend's name: the flag's, else $KRAIT_BACKEND's, else the image's setting,
    else libvirt when hosts are given, else QEMU; one that does not exist is an error
    naming where it came from."""
    name = flag or os.environ.get(ENV) or setting or ("libvirt" if uris else DEFAULT)
    source = "--backend" if flag else f"${ENV}" if os.environ.get(ENV) else "backend"
    return check_known(name, source)


def get_backend(name: str = DEFAULT, uri: str | None = None) -> Backend:
    """The backend ``name``, on the host ``uri`` where it has one."""
    return BACKENDS[check_known(name)](uri)
