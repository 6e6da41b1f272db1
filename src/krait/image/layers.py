"""Image layers: one erofs disk each, stored zstd-compressed in the image.

The guest mounts each layer read-only where it belongs (the base layer is the root the
kernel mounts itself), so the base layer (interpreter, libraries, standard library,
guest runtime) is built once and cached by a key over what went into it; an app-only
change rebuilds the small app layer. On the host every instance of every image reads
one unpacked copy of a layer (see :mod:`krait.image.archive`).
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from krait import __version__
from krait.guest import protocol
from krait.image.closure import GuestFile
from krait.image.entry import Entry
from krait.image.erofs import build_erofs, listing
from krait.image.etc import etc_entries
from krait.paths import cache_dir, krait_dir, write_atomically

_ZSTD = zstandard.ZstdCompressionParameters.from_level(19, write_checksum=True)
_MAX_WINDOW = 1 << 25


@dataclass(frozen=True)
class Layer:
    name: str
    disk_digest: str  # sha256 of the erofs image
    disk_size: int
    files: int
    blob: bytes  # the compressed image as stored in the .krait file
    listing: bytes  # what it holds, for inspect (see erofs.listing)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()

    @property
    def mount(self) -> str:
        return protocol.MOUNTS[self.name]


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=_ZSTD).compress(data)


def decompress_to(source: BinaryIO, out: BinaryIO, limit: int) -> str:
    """Unpack the zstd stream ``source`` into ``out``, in pieces and never more than
    ``limit`` bytes (what the manifest declares: a small blob may inflate to gigabytes);
    return the sha256 of what was unpacked. ValueError if it is more, or not zstd."""
    digest, total = hashlib.sha256(), 0
    # A frame may ask for a window of up to 2 GiB of decoder memory; krait's use 8 MiB.
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
    try:
        with decompressor.stream_reader(source, closefd=False) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise ValueError(f"unpacks to more than the {limit} bytes its manifest "
                                     "says")
                digest.update(chunk)
                out.write(chunk)
    except zstandard.ZstdError as e:
        raise ValueError(f"is not zstd data krait wrote ({e})") from None
    return digest.hexdigest()


def make_layer(name: str, entries: list[Entry]) -> Layer:
    """The disk for layer ``name``: entries at guest paths, placed under its mount point."""
    mount = protocol.MOUNTS[name]
    inside = [_relative(e, mount) for e in entries]
    disk = build_erofs(inside)
    return Layer(name, hashlib.sha256(disk).hexdigest(), len(disk),
                 sum(1 for e in inside if stat.S_ISREG(e.mode)), compress(disk),
                 listing(entries))


def _relative(entry: Entry, mount: str) -> Entry:
    if mount == "/":
        return entry
    if not entry.path.startswith(mount + "/"):
        raise ValueError(f"{entry.path} is not under {mount}")
    return Entry(entry.path[len(mount):], entry.mode, entry.data)


def entries_for(files: list[GuestFile], content: Callable[[GuestFile], bytes]) -> list[Entry]:
    out = []
    for f in files:
        if f.how == "symlink":
            out.append(Entry.symlink(f.guest, str(f.host)))
        else:
            executable = f.how == "elf" and bool(f.host.stat().st_mode & 0o111)
            out.append(Entry.file(f.guest, content(f), executable))
    return out


def layer_key(name: str, files: list[GuestFile], extra: bytes) -> str:
    """A cache key from what the layer is made of: paths, sizes and mtimes, not contents."""
    h = hashlib.sha256(f"{__version__}\0{name}\0erofs\0".encode() + extra)
    for f in files:
        st = f.host.lstat() if f.how != "symlink" else None
        h.update(f"{f.guest}\0{f.host}\0{f.how}\0".encode())
        if st:
            h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def cached_layer(key: str, build: Callable[[], Layer]) -> Layer:
    folder = krait_dir(cache_dir(), "layers")
    meta, blob, files = (folder / f"{key}.json", folder / f"{key}.erofs.zst",
                         folder / f"{key}.files.json")
    if meta.exists() and blob.exists() and files.exists():
        m = json.loads(meta.read_text())
        return Layer(m["name"], m["disk_digest"], m["disk_size"], m["files"],
                     blob.read_bytes(), files.read_bytes())
    layer = build()
    write_atomically(blob, layer.blob)
    write_atomically(files, layer.listing)
    # The metadata last, so a layer whose parts are all there is complete.
    write_atomically(meta, json.dumps({"name": layer.name, "disk_digest": layer.disk_digest,
                                       "disk_size": layer.disk_size,
                                       "files": layer.files}).encode())
    return layer


def system_entries(interpreter: str, dynload: str) -> list[Entry]:
    """What every guest's root holds besides Python's files: /init, mount points and the
    files of /etc that libc reads (see krait.image.etc)."""
    init = (f"#!{interpreter} -IS\n"
            "import sys\n"
            "sys.path.insert(0, '/krait/runtime')\n"
            "from krait.guest.init import main\n"
            # multiprocessing's spawn re-runs the parent's main script as __mp_main__.
            "if __name__ == '__main__':\n"
            "    main()\n")
    return [
        Entry.file("/init", init.encode(), executable=True),
        Entry.folder("/proc", 0o555),
        Entry.folder("/sys", 0o555),
        Entry.folder("/dev"),
        Entry.folder("/tmp", 0o1777),
        # Mount points for data volumes (krait.vmm.volumes): the root is read-only.
        Entry.folder("/data"),
        Entry.folder("/mnt"),
        *(Entry.folder(mount) for name, mount in protocol.MOUNTS.items() if mount != "/"),
        Entry.folder(dynload),
        *etc_entries(),
    ]
