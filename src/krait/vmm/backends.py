"""Backends by name: the one place that knows which exist.

    backend = get_backend(choose(flag, image_setting), uri)

The name comes from ``--backend``, else ``$KRAIT_BACKEND``, else the image's ``backend``
setting, else a libvirt URI given with ``--connect`` (which means libvirt), else QEMU.
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
        raise ConfigError(f"--connect {uri}: a libvirt URI needs --backend libvirt")
    return QemuBackend()


def _libvirt(uri: str | None) -> Backend:
    from krait.vmm.libvirt import DEFAULT_URI, LibvirtBackend

    return LibvirtBackend(uri or DEFAULT_URI)


BACKENDS: dict[str, Callable[[str | None], Backend]] = {"qemu": _qemu, "libvirt": _libvirt}


def is_uri(text: str) -> bool:
    """A libvirt URI (``qemu:///system``, ``qemu+ssh://host/system``), not NAME=HOST:PORT."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()


def choose(flag: str | None = None, setting: str | None = None,
           uris: tuple[str, ...] = ()) -> str:
    name = flag or os.environ.get(ENV) or setting or ("libvirt" if uris else DEFAULT)
    if name not in BACKENDS:
        source = "--backend" if flag else f"${ENV}" if os.environ.get(ENV) else "backend"
        raise ConfigError(f"{source} {name}: no such backend",
                          hint=f"use one of {', '.join(BACKENDS)}")
    return name


def get_backend(name: str = DEFAULT, uri: str | None = None) -> Backend:
    """The backend ``name``, on the libvirt host ``uri`` where it has one."""
    if name not in BACKENDS:
        raise ConfigError(f"no backend {name!r}", hint=f"use one of {', '.join(BACKENDS)}")
    return BACKENDS[name](uri)
