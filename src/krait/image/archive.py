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

An image may come from anyone, so reading one is bounded whatever it holds: only the
USTAR headers krait writes are read (regular files with short names, no links, no tar
extensions, at most 32 members), the manifest is at most 4 MiB, every other part is
streamed (hashed, or unpacked with an output limit of its declared size), and a listing
is read only when asked for, at most 8 MiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import stat
import tarfile
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from krait.errors import ImageError
from krait.image.manifest import MAX_MANIFEST, Manifest, Part
from krait.image.signing import SIGNATURE, Trust, sign
from krait.integrity import remember_verified, verified
from krait.paths import atomic_file, cache_dir, krait_dir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SUFFIX = ".krait"
log = logging.getLogger("krait")
# What a .krait's tar holds: short relative names (USTAR), each once.
MEMBER_RE = re.compile(r"[a-z0-9_][a-z0-9_./-]{0,99}")
MAX_MEMBERS = 32
MAX_LISTING = 8 << 20
MAX_SIGNATURE = 1024
BLOCK = 512  # a tar header, and the unit its data is padded to
CHUNK = 1 << 20


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


def write_members(path: Path, members: Sequence[tuple[str, bytes | Path]],
                  mode: int = 0o644) -> None:
    """The tar itself, members in order (bytes, or a file's, streamed): the same members
    give the same bytes."""
    with atomic_file(path, mode) as fd, open(fd, "wb", closefd=False) as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            if isinstance(content, bytes):
                tar.addfile(_info(name, len(content)), io.BytesIO(content))
                continue
            with content.open("rb") as f:
                tar.addfile(_info(name, os.fstat(f.fileno()).st_size), f)


@dataclass(frozen=True)
class Member:
    """One member of the tar, found from its header: where its data is in the file."""

    name: str
    offset: int
    size: int


def _refused(path: Path, problem: str) -> ImageError:
    return ImageError(f"{path}: {problem}", hint="it was not built by krait, or was damaged "
                      "or changed since; do not use it (rebuild it with `krait build`)")


def _header(block: bytes, path: Path) -> tuple[str, int]:
    """A member's name and size from its 512-byte USTAR header, as krait writes one: a
    regular file with a short name; links and tar's extensions (long names, sparse files,
    PAX records) are refused, never followed or expanded."""
    try:
        stored = int(block[148:156].strip(b"\0 "), 8)
        size = int(block[124:136].strip(b"\0 "), 8)
    except ValueError:
        raise _refused(path, "not a krait image (not a tar krait writes)") from None
    if stored != sum(block[:148]) + 8 * ord(" ") + sum(block[156:]):
        raise _refused(path, "not a krait image (a damaged tar header)")
    raw = block[:100].split(b"\0", 1)[0]
    name = raw.decode("ascii", "replace")
    kind = block[156:157]
    if kind in (b"1", b"2"):
        target = block[157:257].split(b"\0", 1)[0].decode("ascii", "replace")
        raise _refused(path, f"it holds a link ({name!r} -> {target!r}); a krait image "
                       "holds only files")
    if kind not in (b"0", b"\0") or block[257:263] != b"ustar\0" or block[345:500].strip(b"\0"):
        raise _refused(path, f"it holds a member of a kind krait never writes ({name!r}, type "
                       f"{kind!r})")
    if not MEMBER_RE.fullmatch(name) or ".." in name:
        raise _refused(path, f"it holds a member named {name!r}")
    return name, size


def _members(f: BinaryIO, path: Path) -> dict[str, Member]:
    """The tar's members in order, from their headers alone (at most MAX_MEMBERS)."""
    end = os.fstat(f.fileno()).st_size
    members: dict[str, Member] = {}
    offset = 0
    while True:
        f.seek(offset)
        block = f.read(BLOCK)
        if len(block) < BLOCK:
            raise _refused(path, "not a krait image (cut short)")
        if block == bytes(BLOCK):  # the end of the archive
            return members
        name, size = _header(block, path)
        if name in members or len(members) == MAX_MEMBERS:
            raise _refused(path, f"it holds {name!r} twice, or more than {MAX_MEMBERS} members")
        if offset + BLOCK + size > end:
            raise _refused(path, f"{name} is cut short")
        members[name] = Member(name, offset + BLOCK, size)
        offset += BLOCK + -(-size // BLOCK) * BLOCK


class _Slice(io.RawIOBase):
    """One member's bytes, read from the file in pieces (never more than it holds)."""

    def __init__(self, f: BinaryIO, member: Member) -> None:
        self._f, self._left = f, member.size
        f.seek(member.offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[:min(len(buffer), self._left)]
        n: int = self._f.readinto(view)  # type: ignore[attr-defined]
        self._left -= n
        return n


def _slice(f: BinaryIO, member: Member) -> BinaryIO:
    return typing.cast(BinaryIO, io.BufferedReader(_Slice(f, member), CHUNK))


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _open(path: Path) -> BinaryIO:
    """The image file itself (a path the user gave: a link to it is fine), only if it is a
    regular file: a FIFO would block, a device never end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ImageError(f"{path}: no such image ({e.strerror})",
                         hint="build one with `krait build` in the app's folder") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{path}: not a file", hint="name a .krait file")
    os.set_blocking(fd, True)
    return open(fd, "rb")


@dataclass(frozen=True)
class Image:
    """A .krait file, read and checked: its manifest in memory, its parts where they are
    in the file (each checked against its digest when the image was opened)."""

    path: Path
    manifest: Manifest
    digest: str
    members: dict[str, Member]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def signed(self) -> bool:
        return SIGNATURE in self.members

    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[BinaryIO]:
        """Member ``name``'s bytes as a stream (a part may be gigabytes)."""
        with _open(self.path) as f:
            yield _slice(f, self.members[name])

    def read(self, name: str, limit: int = MAX_LISTING) -> bytes:
        """A small member's bytes (a listing, the manifest, the signature)."""
        if self.members[name].size > limit:
            raise _refused(self.path, f"{name} is over {limit} bytes")
        with self.stream(name) as f:
            return f.read()

    def files(self) -> list[GuestFileInfo]:
        """Every file, folder and symlink of every layer, at its guest path."""
        out = []
        for layer in self.manifest.layers:
            data = self.read(layer.listing)
            if hashlib.sha256(data).hexdigest() != layer.listing_sha256:
                raise _refused(self.path, f"{layer.listing} changed since it was opened")
            try:
                rows = json.loads(data)
                out += [GuestFileInfo(layer.name, *_row(row)) for row in rows]
            except (ValueError, TypeError, RecursionError):
                raise _refused(self.path, f"{layer.listing} is not a list of files") from None
        return out


def _row(row: object) -> tuple[str, int, int, str, str]:
    """One listing row as krait writes it (erofs.listing): path, mode, size[, target, runs]."""
    if not isinstance(row, list) or not 3 <= len(row) <= 5:
        raise TypeError
    path, mode, size, target, runs = [*row, "", ""][:5]
    if not (isinstance(path, str) and type(mode) is int and type(size) is int
            and isinstance(target, str) and isinstance(runs, str)):
        raise TypeError
    return path, mode, size, target, runs


@dataclass(frozen=True, slots=True)  # an image may list a hundred thousand files
class GuestFileInfo:
    layer: str
    path: str
    mode: int
    size: int
    target: str = ""  # a symlink's
    runs: str = ""  # "script", "program", "loader" or "" (see erofs.runnable)


@dataclass(frozen=True)
class Expected:
    """What one member of an image must be, by its manifest."""

    sha256: str | None  # None: the manifest and the signature, checked otherwise
    size: int | None  # when the manifest says it exactly
    limit: int  # the most it may be

    def check_size(self, name: str, size: int) -> str | None:
        """What is wrong with a member of ``size`` bytes, if anything."""
        if self.size is not None and size != self.size:
            return f"{name} is {size} bytes; its manifest says {self.size}"
        if size > self.limit:
            return f"{name} is over {self.limit} bytes"
        return None


def expected_members(manifest: Manifest) -> dict[str, Expected]:
    """Every member an image with ``manifest`` may hold (the signature is optional)."""
    out = {"manifest.json": Expected(None, None, MAX_MANIFEST),
           **{p.member: Expected(p.sha256, p.size, p.size) for p in manifest.parts},
           **{p.listing: Expected(p.listing_sha256, None, MAX_LISTING)
              for p in manifest.layers}}
    out[SIGNATURE] = Expected(None, None, MAX_SIGNATURE)
    return out


def open_image(path: Path, trust: Trust | None = None) -> Image:
    """Read a .krait file and check every part against its manifest, and the whole
    against ``trust`` (a signature, a pinned digest) if given. Whatever the file holds,
    what is read is bounded: headers, a manifest of at most 4 MiB, parts streamed."""
    with _open(path) as f:
        members = _members(f, path)
        if next(iter(members), None) != "manifest.json":
            raise _refused(path, "not a krait image (its first member is not manifest.json)")
        if members["manifest.json"].size > MAX_MANIFEST:
            raise _refused(path, f"its manifest is over {MAX_MANIFEST >> 20} MiB")
        raw = _slice(f, members["manifest.json"]).read()
        manifest = Manifest.from_json(raw, path)
        expected = expected_members(manifest)
        unknown = set(members) - set(expected)
        if unknown:
            raise _refused(path, f"it holds {sorted(unknown)[0]!r}, which its manifest does "
                           "not describe")
        for name, want in expected.items():
            member = members.get(name)
            if member is None and want.sha256 is None:
                continue
            if member is None:
                raise ImageError(f"{path}: {name} is missing",
                                 hint="rebuild it with `krait build`")
            problem = want.check_size(name, member.size)
            if problem:
                raise _refused(path, problem)
            if want.sha256 is None:
                continue
            got = _sha256(_slice(f, member))
            if got != want.sha256:
                raise ImageError(
                    f"{path}: {name} does not match its digest (sha256 {got[:16]}..., manifest "
                    f"says {want.sha256[:16]}...): the image was corrupted or tampered with",
                    hint="do not boot it; rebuild it with `krait build`")
        signature = _slice(f, members[SIGNATURE]).read() if SIGNATURE in members else None
    digest = hashlib.sha256(raw).hexdigest()
    if trust is not None:
        trust.check(path, digest, signature)
    return Image(path, manifest, digest, members)


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
    if os.path.lexists(path):
        if verified(path, part.unpacked_sha256):
            return path
        log.warning("%s: the unpacked %s in the cache does not match its digest; unpacking "
                    "it again", path, part.name)
    from krait.image.layers import decompress_to  # the build's half: not for every run

    # Shared by every instance: never written once it is there (0444).
    with image.stream(part.member) as stored, atomic_file(path, mode=0o444) as fd, \
            open(fd, "wb", closefd=False) as out:
        hint = "do not boot it; rebuild it with `krait build`"
        try:
            unpacked = decompress_to(stored, out, part.unpacked_size)
        except ValueError as e:
            raise ImageError(f"{image.path}: {part.member} {e}", hint=hint) from None
        if unpacked != part.unpacked_sha256:
            raise ImageError(f"{image.path}: {part.member} does not unpack to what the "
                             "manifest says", hint=hint)
    remember_verified(path)
    return path
