"""``krait export IMAGE --oci DIR``: the image as an OCI image layout, for engines that
boot a kernel out of a container image (KubeVirt's ``kernelBoot``, Flintlock).

The layout holds one image with one uncompressed layer whose files are what such an
engine asks for by path:

    /boot/vmlinux            the kernel (ELF, booted directly: PVH)
    /disks/N-NAME.erofs      the read-only disks, in the order they are attached
    /krait/cmdline           the kernel command line krait would boot it with
    /krait/manifest.json     the image's manifest (every digest)

The same image gives the same bytes (zeroed metadata, fixed order), so the layout's
digests are stable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from krait.errors import ConfigError
from krait.image.archive import Image
from krait.image.manifest import MAX_MANIFEST
from krait.paths import open_nofollow, write_atomically

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CMDLINE_ANNOTATION = "dev.krait.kernel.cmdline"


class _Hashing:
    """A file being written, hashed as it goes (the layer is named by its digest)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


def _write_layer(files: list[tuple[str, Path | bytes]], out: _Hashing) -> None:
    """The layer's tar, streamed: a disk may be gigabytes, and is never held in memory."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        folders = sorted({str(Path(name).parent) for name, _ in files} - {"."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = 0o444, 0
            if isinstance(data, bytes):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                with open(open_nofollow(data), "rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, f)


def export_layout(image: Image, kernel: Path, disks: list[tuple[str, Path]],
                  cmdline: str, folder: Path, tag: str = "latest") -> str:
    """Write the layout into ``folder`` (new or empty); return the image manifest's digest."""
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} is not empty", hint="export into a new folder")
    files: list[tuple[str, Path | bytes]] = [
        ("boot/vmlinux", kernel),
        *((f"disks/{i}-{name}.erofs", path) for i, (name, path) in enumerate(disks)),
        ("krait/cmdline", cmdline.encode() + b"\n"),
        ("krait/manifest.json", image.read("manifest.json", MAX_MANIFEST))]
    store = folder / "blobs" / "sha256"
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=store, prefix=".layer-") as scratch:
        hashing = _Hashing(scratch)  # type: ignore[arg-type]
        _write_layer(files, hashing)
        scratch.flush()
        layer_digest = "sha256:" + hashing.digest.hexdigest()
        layer_size = hashing.size
        os.link(scratch.name, store / layer_digest.removeprefix("sha256:"))
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"dev.krait.image.name": image.name,
                              "dev.krait.image.digest": f"sha256:{image.digest}"}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }, sort_keys=True).encode()
    blobs = {"sha256:" + hashlib.sha256(config).hexdigest(): config}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" +
                   hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
        "annotations": {CMDLINE_ANNOTATION: cmdline,
                        "org.opencontainers.image.title": image.name},
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    blobs[manifest_digest] = manifest
    for digest, blob in blobs.items():
        write_atomically(store / digest.removeprefix("sha256:"), blob)
    write_atomically(folder / "oci-layout", b'{"imageLayoutVersion": "1.0.0"}\n')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    write_atomically(folder / "index.json", json.dumps(index, indent=2).encode() + b"\n")
    return manifest_digest
