"""Manifests and images for unit tests: real Manifest objects, no build."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from krait.image.archive import Image
from krait.image.manifest import BootDefaults, Dependencies, KernelIdentity, Manifest, Part
from krait.image.memory import MemoryNeeds


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


def image(parts: dict[str, bytes] | None = None, **kwargs: Any) -> Image:
    return Image(Path("x.krait"), manifest(**kwargs), "0" * 64, parts or {})
