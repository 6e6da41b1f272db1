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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from krait.config.settings import BY_KEY, SETTINGS, parse_connect
from krait.errors import ImageError
from krait.guest import protocol
from krait.image.memory import MemoryNeeds
from krait.names import valid_name
from krait.typed import ShapeError, from_json

FORMAT = 2
# Bounds on what an image may claim. A manifest is kilobytes (its module list is most of
# it); one part (stored or unpacked) is at most what a USTAR member can be.
MAX_MANIFEST = 4 << 20
MAX_PART = 8 << 30
MAX_MIB = 1 << 20
MAX_TEXT = 255
KERNEL_FORMATS = ("elf", "bzimage")
DISK_FORMATS = ("erofs",)
SHA256 = re.compile(r"[0-9a-f]{64}")
CMDLINE = re.compile(r"[ -~]{0,2047}")
INTERPRETER = re.compile(r"/[^\0]*/python[0-9.]*")
BAKED = {s.field: s for s in SETTINGS if s.stage == "build"}


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
class TrustStore:
    """The certificates the guest's TLS clients trust (see krait.image.tls)."""

    source: str  # "ca = NAME" (the app's), "certifi VERSION" or the build host's bundle
    sha256: str
    path: str  # in the guest


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
    trust: TrustStore | None = None  # the certificates the guest's TLS clients trust
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
        """Parse a manifest into types and check every field that reaches a host path, a
        command line or a terminal against what krait writes; anything else (an older
        format, a damaged or forged file) is an ImageError saying what to do."""
        if len(raw) > MAX_MANIFEST:
            raise ImageError(f"{where}: the manifest is over {MAX_MANIFEST >> 20} MiB",
                             hint="it was not built by krait; do not use it")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep
            raise ImageError(f"{where}: the manifest is not valid JSON",
                             hint="the file is damaged; rebuild it with `krait build`") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ImageError(f"{where}: image format {str(found)[:20]} is not {FORMAT} (built "
                             "by an older krait: its layers are not disks)",
                             hint="rebuild it with this krait: `krait build` in the app folder")
        if not valid_name(data.get("name")):
            raise ImageError(f"{where}: the manifest's name {str(data.get('name'))[:80]!r} "
                             "is not a valid image name",
                             hint="it was not built by krait, or was changed since")
        try:
            memory = data.get("memory")
            if isinstance(memory, dict):  # written with its derived figures: not fields
                data = {**data, "memory": {k: v for k, v in memory.items()
                                           if k not in ("minimum_mib", "default_mib")}}
            manifest = from_json(cls, data)
            _check(manifest)
        except ShapeError as e:
            raise ImageError(f"{where}: the manifest is not one krait writes ({e})",
                             hint="it was damaged or changed since it was built; rebuild it "
                             "with `krait build`") from None
        return manifest


def _check(m: Manifest) -> None:
    """What types cannot say: each field within what krait writes (ShapeError if not)."""
    _part(m.kernel, "kernel", "kernel", KERNEL_FORMATS)
    names = [p.name for p in m.layers]
    if len(set(names)) != len(names) or "base" not in names:
        raise ShapeError(f"layers are {names[:5]}: each once, with a base")
    for layer in m.layers:
        if layer.name not in protocol.MOUNTS:
            raise ShapeError(f"a layer is named {layer.name[:40]!r}")
        _part(layer, layer.name, "disk", DISK_FORMATS)
    _settings(m.settings)
    if m.trust is not None:
        _text("trust.source", m.trust.source, MAX_TEXT)
        _text("trust.path", m.trust.path, MAX_TEXT)
        if not SHA256.fullmatch(m.trust.sha256):
            raise ShapeError("trust.sha256 is not a sha256")
    _text("krait", m.krait, 40)
    _text("kernel_identity.version", m.kernel_identity.version, 200)
    _text("kernel_identity.key", m.kernel_identity.key, 200)
    # `krait run --target process` runs this file of the host: a Python, nothing else.
    if set(m.interpreter) != {"path", "version"} or not INTERPRETER.fullmatch(
            m.interpreter["path"]):
        raise ShapeError("interpreter is not {path, version}, the path a Python's")
    for key, value in m.interpreter.items():
        _text(f"interpreter.{key}", value, 4096)
    _boot(m.boot)
    numbers = (m.memory.heap_mib, m.memory.mapped_mib, m.memory.files_mib,
               m.memory.children_mib)
    if not all(0 <= n <= MAX_MIB for n in numbers):
        raise ShapeError("memory needs are out of range")
    for module in m.modules:
        # Identifiers, and a '-' where a file's name has one that only an __import__ of a
        # computed name reaches (sysconfig's _sysconfigdata__x86_64-linux-gnu).
        if len(module) > MAX_TEXT or not all(p[:1] != "-" and p.replace("-", "_").isidentifier()
                                             for p in module.split(".")):
            raise ShapeError(f"a module is named {module[:40]!r}")
    deps = m.dependencies
    if deps.lock_sha256 is not None and not SHA256.fullmatch(deps.lock_sha256):
        raise ShapeError("dependencies.lock_sha256 is not a sha256")
    for package, version in deps.packages.items():
        _text("a package name", package, 200)
        _text(f"{package[:40]}'s version", version, 200)


def _part(part: Part, name: str, kind: str, formats: tuple[str, ...]) -> None:
    """A part is where krait puts it: its fields name no path and no other member."""
    disk = kind == "disk"
    where = f"part {name}"
    if (part.name, part.kind) != (name, kind) or part.format not in formats:
        raise ShapeError(f"{where} is {part.kind[:20]!r}/{part.format[:20]!r}")
    expected = (f"layers/{name}.erofs.zst", f"layers/{name}.files.json",
                protocol.MOUNTS[name]) if disk else ("kernel.zst", "", "")
    if (part.member, part.listing, part.mount) != expected:
        raise ShapeError(f"{where} is not stored or mounted where krait puts it")
    digests = (part.sha256, part.unpacked_sha256, *((part.listing_sha256,) if disk else ()))
    if not all(SHA256.fullmatch(d) for d in digests):
        raise ShapeError(f"{where} has a digest that is not a sha256")
    if not (0 <= part.size <= MAX_PART and 0 <= part.unpacked_size <= MAX_PART
            and 0 <= part.files <= MAX_PART):
        raise ShapeError(f"{where}'s sizes are out of range")


def _settings(settings: dict[str, Any]) -> None:
    """The baked settings, each as the settings table parses it (entry and kind needed)."""
    for key in ("entry", "kind"):
        if key not in settings:
            raise ShapeError(f"settings.{key} is missing")
    for key, value in settings.items():
        setting = BAKED.get(key)
        if setting is None:
            raise ShapeError(f"settings.{key[:40]} is not a setting")
        if value is None and setting.default is None:
            continue
        try:
            setting.parse(value)
        except (ValueError, TypeError) as e:
            raise ShapeError(f"settings.{key}: {e}") from None


def _boot(boot: BootDefaults) -> None:
    try:
        BY_KEY["memory"].parse(boot.memory)
        BY_KEY["vcpus"].parse(boot.vcpus)
        parse_connect(boot.connect)
        if boot.backend is not None:
            BY_KEY["backend"].parse(boot.backend)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"boot: {e}") from None
    # It goes onto the kernel command line: printable ASCII, and it must fit there.
    if not CMDLINE.fullmatch(boot.cmdline):
        raise ShapeError("boot.cmdline is not printable text of up to 2047 characters")


def _text(what: str, value: str, limit: int) -> None:
    if len(value) > limit or not value.isprintable():
        raise ShapeError(f"{what} is not printable text of up to {limit} characters")
