"""The ``NAME.krait`` file: a plain tar holding a manifest, the kernel and the layers.

    manifest.json              name, settings, each part's digests and sizes (manifest.py)
    kernel.zst                 the kernel (ELF vmlinux for PVH boot, or a bzImage), zstd
    layers/NAME.erofs.zst      one read-only erofs disk per layer, zstd
    layers/NAME.files.json     what the layer holds (for inspect)
    manifest.sig               with `krait build --sign`: ed25519 over the digest (signing.py)

Members are written in that order with zeroed metadata, so the same inputs give the
same bytes. Every part is checked against the manifest when the image is opened, and
what QEMU boots (the unpacked kernel and disks, kept once per digest in the cache, shared
by every instance) is checked against it before each boot.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from krait.errors import ImageError
from krait.image.layers import decompress
from krait.image.manifest import Manifest, Part
from krait.image.signing import SIGNATURE, Trust, sign
from krait.integrity import remember_verified, verified
from krait.paths import atomic_file, cache_dir, krait_dir, write_atomically

SUFFIX = ".krait"
log = logging.getLogger("krait")


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    return info


def write_image(path: Path, manifest: Manifest, parts: dict[str, bytes],
                mode: int = 0o644, key: Ed25519PrivateKey | None = None) -> str:
    """Write the image (0600 for one holding a secret), signed with ``key`` if given;
    return its digest (the sha256 of its manifest)."""
    manifest_bytes = manifest.to_json()
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    signature = {SIGNATURE: sign(key, digest)} if key else {}
    write_members(path, [("manifest.json", manifest_bytes), *(parts | signature).items()], mode)
    return digest


def write_members(path: Path, members: list[tuple[str, bytes]], mode: int = 0o644) -> None:
    """The tar itself, members in order: the same members give the same bytes."""
    with atomic_file(path, mode) as fd, open(fd, "wb", closefd=False) as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in members:
            tar.addfile(_info(name, len(blob)), io.BytesIO(blob))


def read_members(path: Path) -> list[tuple[str, bytes]]:
    """The tar's members in order (unchecked: :func:`open_image` checks them)."""
    with tarfile.open(path, "r:") as tar:
        return [(m.name, f.read()) for m in tar.getmembers()
                if (f := tar.extractfile(m)) is not None]


@dataclass(frozen=True)
class Image:
    """A .krait file, read and checked."""

    path: Path
    manifest: Manifest
    digest: str
    parts: dict[str, bytes]

    @property
    def name(self) -> str:
        return self.manifest.name

    def files(self) -> list[GuestFileInfo]:
        """Every file, folder and symlink of every layer, at its guest path."""
        return [GuestFileInfo(layer.name, *row)
                for layer in self.manifest.layers
                for row in json.loads(self.parts[layer.listing])]


@dataclass(frozen=True)
class GuestFileInfo:
    layer: str
    path: str
    mode: int
    size: int
    target: str = ""  # a symlink's
    runs: str = ""  # "script", "program", "loader" or "" (see erofs.runnable)


def open_image(path: Path, trust: Trust | None = None) -> Image:
    """Read a .krait file and check every part against its manifest, and the whole
    against ``trust`` (a signature, a pinned digest) if given."""
    if not path.is_file():
        raise ImageError(f"{path}: no such image",
                         hint="build one with `krait build` in the app's folder")
    try:
        parts = dict(read_members(path))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ImageError(f"{path}: not a krait image ({e})",
                         hint="rebuild it with `krait build`") from None
    raw = parts.pop("manifest.json", None)
    if raw is None:
        raise ImageError(f"{path}: no manifest inside", hint="rebuild it with `krait build`")
    manifest = Manifest.from_json(raw, path)
    described = {p.member: p.sha256 for p in manifest.parts}
    described |= {p.listing: p.listing_sha256 for p in manifest.layers if p.listing}
    for name, want in described.items():
        blob = parts.get(name)
        if blob is None:
            raise ImageError(f"{path}: {name} is missing", hint="rebuild it with `krait build`")
        got = hashlib.sha256(blob).hexdigest()
        if got != want:
            raise ImageError(
                f"{path}: {name} does not match its digest (sha256 {got[:16]}..., manifest "
                f"says {want[:16]}...): the image was corrupted or tampered with",
                hint="do not boot it; rebuild it with `krait build`")
    digest = hashlib.sha256(raw).hexdigest()
    if trust is not None:
        trust.check(path, digest, parts.get(SIGNATURE))
    return Image(path, manifest, digest, parts)


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots: the kernel and one read-only disk per layer, in attach order."""

    kernel: Path
    disks: tuple[tuple[Part, Path], ...]


def unpack_for_boot(image: Image) -> BootFiles:
    """The unpacked kernel and disks, each kept once per digest in the cache (one host copy
    for every image and instance that uses it) and checked before it is booted."""
    folder = krait_dir(cache_dir(), "disks")
    kernel = _unpacked(image, image.manifest.kernel, folder)
    disks = tuple((p, _unpacked(image, p, folder)) for p in image.manifest.layers)
    return BootFiles(kernel, disks)


def _unpacked(image: Image, part: Part, folder: Path) -> Path:
    suffix = ".vmlinux" if part.kind == "kernel" else f".{part.format}"
    path = folder / f"{part.unpacked_sha256}{suffix}"
    if path.exists():
        if verified(path, part.unpacked_sha256):
            return path
        log.warning("%s: the unpacked %s in the cache does not match its digest; unpacking "
                    "it again", path, part.name)
    data = decompress(image.parts[part.member])
    if hashlib.sha256(data).hexdigest() != part.unpacked_sha256:
        raise ImageError(f"{image.path}: {part.member} does not unpack to what the manifest "
                         "says", hint="do not boot it; rebuild it with `krait build`")
    write_atomically(path, data, mode=0o444)  # shared by every instance: never written
    remember_verified(path)
    return path
