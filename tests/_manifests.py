"""Manifests and images for unit tests: real Manifest objects and real .krait files, no
build."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from krait.guest import protocol
from krait.image.archive import Image, write_members
from krait.image.layers import compress
from krait.image.manifest import BootDefaults, Dependencies, KernelIdentity, Manifest, Part
from krait.image.memory import MemoryNeeds
from krait.image.signing import SIGNATURE, sign


def disk(name: str, mount: str, member: str = "", listing: str = "") -> Part:
    return Part(name, "disk", "erofs", member or f"layers/{name}.erofs.zst", "0" * 64, 100,
                "1" * 64, 4096, 1, mount, listing or f"layers/{name}.files.json", "2" * 64)


def manifest(name: str = "hello", cmdline: str = "", memory: int = 48,
             layers: tuple[Part, ...] | None = None, **changes: Any) -> Manifest:
    made = Manifest(
        name=name, krait="0", settings={"entry": "app:app", "kind": "asgi", "ports": [8080]},
        boot=BootDefaults(memory, 1, cmdline), memory=MemoryNeeds(4, 4),
        interpreter={"path": "/usr/bin/python3.11", "version": "3.11.2"},
        kernel=Part("kernel", "kernel", "elf", "kernel.zst", "0" * 64, 10, "1" * 64, 20),
        kernel_identity=KernelIdentity("6.1", "k"),
        layers=layers if layers is not None else (disk("base", "/"), disk("app", "/krait/app")),
        modules=("app",), dependencies=Dependencies(False))
    return replace(made, **changes)


def image(**kwargs: Any) -> Image:
    """An Image with no file behind it (for what reads only its manifest)."""
    return Image(Path("x.krait"), manifest(**kwargs), "0" * 64, {})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _part(name: str, kind: str, data: bytes, blob: bytes, listing: bytes = b"") -> Part:
    if kind == "kernel":
        return Part(name, kind, "elf", "kernel.zst", _sha(blob), len(blob), _sha(data),
                    len(data))
    return Part(name, kind, "erofs", f"layers/{name}.erofs.zst", _sha(blob), len(blob),
                _sha(data), len(data), 1, protocol.MOUNTS[name], f"layers/{name}.files.json",
                _sha(listing))


def crafted(path: Path, layers: dict[str, bytes] | None = None,
            kernel: bytes = b"\x7fELF a kernel",
            listings: dict[str, list[list[Any]]] | None = None,
            change: Callable[[dict[str, Any]], object] | None = None,
            members: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]] | None = None,
            key: Ed25519PrivateKey | None = None, **manifest_changes: Any) -> Path:
    """A real .krait file whose every digest is right: ``layers`` (name -> the disk's
    bytes), each with a listing of one file unless ``listings`` says; then ``change``
    edits the manifest's JSON (a hostile field, say) and ``members`` the tar's members;
    ``key`` signs it."""
    layers = {"base": b"base disk", "app": b"app disk"} if layers is None else layers
    kblob = compress(kernel)
    stored: list[tuple[str, bytes]] = [("kernel.zst", kblob)]
    parts = []
    for name, data in layers.items():
        rows = (listings or {}).get(name, [[f"{protocol.MOUNTS[name].rstrip('/')}/f.py",
                                            0o100644, len(data), "", ""]])
        listing, blob = json.dumps(rows).encode(), compress(data)
        parts.append(_part(name, "disk", data, blob, listing))
        stored += [(f"layers/{name}.erofs.zst", blob), (f"layers/{name}.files.json", listing)]
    made = manifest(kernel=_part("kernel", "kernel", kernel, kblob), layers=tuple(parts),
                    **manifest_changes)
    data = json.loads(made.to_json())
    if change is not None:
        change(data)
    raw = json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"
    all_members = [("manifest.json", raw), *stored]
    if key is not None:
        all_members.append((SIGNATURE, sign(key, _sha(raw))))
    write_members(path, members(all_members) if members else all_members)
    return path
