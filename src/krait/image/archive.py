"""The ``NAME.krait`` file: a plain tar holding a manifest, the kernel and the layers.

    manifest.json          name, settings, kernel identity, each part's sha256 and size
    kernel.zst             the kernel (ELF vmlinux for PVH boot, or a bzImage), zstd
    layers/NAME.cpio.zst   one deterministic newc archive per layer, zstd

Members are written in that order with zeroed metadata, so the same inputs give the
same bytes. Every part is checked against the manifest before it is booted.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krait.errors import ImageError
from krait.image.layers import decompress
from krait.paths import cache_dir, write_atomically

FORMAT = 1
SUFFIX = ".krait"


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    return info


def write_image(path: Path, manifest: dict[str, Any], parts: dict[str, bytes]) -> str:
    """Write the image; return its digest (the sha256 of its manifest)."""
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info("manifest.json", len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for name, blob in parts.items():
            tar.addfile(_info(name, len(blob)), io.BytesIO(blob))
    tmp.replace(path)
    return hashlib.sha256(manifest_bytes).hexdigest()


@dataclass(frozen=True)
class Image:
    """A .krait file, read and checked."""

    path: Path
    manifest: dict[str, Any]
    digest: str
    parts: dict[str, bytes]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    def layer_blobs(self) -> list[tuple[dict[str, Any], bytes]]:
        return [(layer, self.parts[layer["member"]]) for layer in self.manifest["layers"]]


def open_image(path: Path) -> Image:
    """Read a .krait file and check every part against its manifest."""
    if not path.is_file():
        raise ImageError(f"{path}: no such image",
                         hint="build one with `krait build` in the app's folder")
    try:
        with tarfile.open(path, "r:") as tar:
            parts = {}
            for member in tar.getmembers():
                f = tar.extractfile(member)
                if f is not None:
                    parts[member.name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ImageError(f"{path}: not a krait image ({e})",
                         hint="rebuild it with `krait build`") from None
    raw = parts.pop("manifest.json", None)
    if raw is None:
        raise ImageError(f"{path}: no manifest inside", hint="rebuild it with `krait build`")
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError:
        raise ImageError(f"{path}: the manifest is not valid JSON",
                         hint="the file is damaged; rebuild it with `krait build`") from None
    if manifest.get("format") != FORMAT:
        raise ImageError(f"{path}: image format {manifest.get('format')} is not {FORMAT}",
                         hint="rebuild it with this version of krait")
    described = {manifest["kernel"]["member"]: manifest["kernel"]["sha256"]}
    described |= {layer["member"]: layer["sha256"] for layer in manifest["layers"]}
    for member, want in described.items():
        blob = parts.get(member)
        if blob is None:
            raise ImageError(f"{path}: {member} is missing", hint="rebuild it with `krait build`")
        got = hashlib.sha256(blob).hexdigest()
        if got != want:
            raise ImageError(
                f"{path}: {member} does not match its digest (sha256 {got[:16]}..., manifest "
                f"says {want[:16]}...): the image was corrupted or tampered with",
                hint="do not boot it; rebuild it with `krait build`")
    return Image(path, manifest, hashlib.sha256(raw).hexdigest(), parts)


def unpack_for_boot(image: Image, compressed_initrd: bool = True) -> tuple[Path, Path]:
    """The kernel and initramfs files QEMU boots, kept in a cache keyed by image digest.

    The kernel is decompressed on the host (the guest then has nothing to unpack
    for it). The layers are concatenated as stored (zstd frames, which the guest
    kernel decompresses) or, with ``compressed_initrd=False``, decompressed here.
    """
    folder = cache_dir() / "boot" / f"{image.digest[:24]}-{'z' if compressed_initrd else 'u'}"
    kernel, initrd = folder / "kernel", folder / "initrd"
    if kernel.exists() and initrd.exists():
        return kernel, initrd
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(kernel, decompress(image.parts[image.manifest["kernel"]["member"]]))
    layers = [blob if compressed_initrd else decompress(blob) for _, blob in image.layer_blobs()]
    write_atomically(initrd, b"".join(layers))
    return kernel, initrd
