"""Image layers: one deterministic newc cpio archive each, zstd-compressed.

Linux unpacks concatenated archives into one root file system, so the base layer
(interpreter, libraries, standard library, guest runtime) is built once and cached
by a key over what went into it; an app-only change rebuilds the small app layer.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from krait import __version__
from krait.image.closure import GuestFile
from krait.image.cpio import Entry, write_cpio
from krait.paths import cache_dir, write_atomically

# A 1 MiB window: the guest kernel decompresses with little memory (-m 32M).
_ZSTD = zstandard.ZstdCompressionParameters.from_level(19, window_log=20, write_checksum=True)


@dataclass(frozen=True)
class Layer:
    name: str
    cpio_digest: str  # sha256 of the uncompressed archive
    cpio_size: int
    files: int
    blob: bytes  # the compressed archive as stored in the image

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=_ZSTD).compress(data)


def decompress(blob: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


def make_layer(name: str, entries: list[Entry]) -> Layer:
    data = write_cpio(entries)
    return Layer(name, hashlib.sha256(data).hexdigest(), len(data),
                 sum(1 for e in entries if stat.S_ISREG(e.mode)), compress(data))


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
    h = hashlib.sha256(f"{__version__}\0{name}\0".encode() + extra)
    for f in files:
        st = f.host.lstat() if f.how != "symlink" else None
        h.update(f"{f.guest}\0{f.host}\0{f.how}\0".encode())
        if st:
            h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def cached_layer(key: str, build: Callable[[], Layer]) -> Layer:
    folder = cache_dir() / "layers"
    folder.mkdir(parents=True, exist_ok=True)
    meta, blob = folder / f"{key}.json", folder / f"{key}.cpio.zst"
    if meta.exists() and blob.exists():
        m = json.loads(meta.read_text())
        return Layer(m["name"], m["cpio_digest"], m["cpio_size"], m["files"], blob.read_bytes())
    layer = build()
    write_atomically(blob, layer.blob)
    meta.write_text(json.dumps({"name": layer.name, "cpio_digest": layer.cpio_digest,
                                "cpio_size": layer.cpio_size, "files": layer.files}))
    return layer


def system_entries(interpreter: str, dynload: str) -> list[Entry]:
    """What every guest has besides Python's files: /init, mount points, the console."""
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
        Entry.folder(dynload),
        # The kernel opens /dev/console for PID 1 before anything is mounted.
        Entry.chardev("/dev/console", 5, 1),
    ]
