"""The manifest of a ``.krait`` image: one typed document, read and written in one place.

    Manifest
    ├── kernel: Part          kind "kernel"   (format "elf" or "bzimage")
    ├── layers: Part, ...     kind "disk"     (format "erofs", mounted read-only at ``mount``)
    ├── settings              what was baked in (entry, kind, ports, env, ...)
    ├── boot: BootDefaults    memory, vcpus, cmdline, connect: the defaults of every boot
    ├── memory: MemoryNeeds   what the image needs to serve
    └── modules, dependencies, interpreter

Every part is stored zstd-compressed under ``member`` and described twice: the digest
of the stored bytes (checked when the image is opened) and of what is unpacked for QEMU
(checked when it is unpacked, and again before a boot uses it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from krait.errors import ImageError
from krait.image.memory import MemoryNeeds
from krait.names import valid_name

FORMAT = 2


@dataclass(frozen=True)
class Part:
    """One part of an image: the kernel or a disk layer."""

    name: str  # "kernel", "base", "packages", "app"
    kind: str  # "kernel" | "disk"
    format: str  # "elf" | "bzimage" for the kernel, "erofs" for a disk
    member: str  # where it is stored in the .krait file (zstd)
    sha256: str  # of the stored bytes
    size: int
    unpacked_sha256: str  # of what QEMU gets
    unpacked_size: int
    files: int = 0
    mount: str = ""  # a disk's mount point in the guest ("/" for the root)
    listing: str = ""  # member holding the disk's file list (for inspect), JSON
    listing_sha256: str = ""


@dataclass(frozen=True)
class KernelIdentity:
    version: str  # e.g. "6.1.192 (linux-source-6.1 6.1.192-3)"
    key: str  # the kernel cache key, or a custom kernel's digest


@dataclass(frozen=True)
class BootDefaults:
    memory: int  # MiB
    vcpus: int
    cmdline: str = ""
    connect: tuple[str, ...] = ()  # NAME=HOST:PORT: the services the guest may reach
    backend: str | None = None  # what runs it unless a boot says otherwise (vmm.backends)


@dataclass(frozen=True)
class Dependencies:
    managed: bool  # installed by krait from the app's lock (False: the user's environment)
    lock_sha256: str | None = None
    packages: dict[str, str] = field(default_factory=dict)  # name -> pinned version


@dataclass(frozen=True)
class Manifest:
    name: str
    krait: str  # the krait version that built it
    settings: dict[str, Any]
    boot: BootDefaults
    memory: MemoryNeeds
    interpreter: dict[str, str]  # path, version
    kernel: Part
    kernel_identity: KernelIdentity
    layers: tuple[Part, ...]
    modules: tuple[str, ...]
    dependencies: Dependencies
    format: int = FORMAT

    # -- what the rest of krait asks ------------------------------------------------------
    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(self.settings.get("ports") or ())

    @property
    def first_port(self) -> int:
        return self.ports[0] if self.ports else 8080

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.kernel, *self.layers)

    def layer(self, name: str) -> Part | None:
        return next((p for p in self.layers if p.name == name), None)

    # -- JSON ---------------------------------------------------------------------------
    def to_json(self) -> bytes:
        data = asdict(self)
        data["memory"] = self.memory.to_json()
        return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> Manifest:
        """Parse a manifest; an older or damaged one is an ImageError saying what to do."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ImageError(f"{where}: the manifest is not valid JSON",
                             hint="the file is damaged; rebuild it with `krait build`") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ImageError(f"{where}: image format {found} is not {FORMAT} (built by an "
                             "older krait: its layers are not disks)",
                             hint="rebuild it with this krait: `krait build` in the app folder")
        if not valid_name(data.get("name")):
            raise ImageError(f"{where}: the manifest's name {str(data.get('name'))[:80]!r} "
                             "is not a valid image name",
                             hint="it was not built by krait, or was changed since")
        try:
            return cls(
                name=str(data["name"]), krait=str(data["krait"]), settings=data["settings"],
                boot=BootDefaults(**{**data["boot"], "connect": tuple(data["boot"].get(
                    "connect", ()))}), memory=MemoryNeeds.from_json(data["memory"]),
                interpreter=data["interpreter"], kernel=Part(**data["kernel"]),
                kernel_identity=KernelIdentity(**data["kernel_identity"]),
                layers=tuple(Part(**p) for p in data["layers"]),
                modules=tuple(data["modules"]),
                dependencies=Dependencies(**data["dependencies"]), format=data["format"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ImageError(f"{where}: the manifest is incomplete ({type(e).__name__}: {e})",
                             hint="rebuild it with `krait build`") from None
