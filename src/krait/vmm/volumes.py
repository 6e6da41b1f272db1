"""Data volumes: a file on the host that the guest sees as a virtio-blk disk.

An ext4 volume is mounted where ``--volume FILE:/data`` says (nosuid, nodev, noexec,
before the app starts); a raw one (``--volume FILE:NAME``) is a device path in the
app's environment, ``$KRAIT_VOLUME_NAME``: the app owns the blocks, MirageOS style.

Nothing acknowledged is lost: QEMU runs the disk with its default ``cache=writeback``
and honours the guest's flushes (an ``fsync`` in the guest is an ``fdatasync`` of the
file on the host before it returns); ext4 journals its metadata (``data=ordered``), so
a VM killed mid-write mounts clean at its next boot. A read-write volume is attached to
one VM at a time (an exclusive ``flock`` for as long as the VM runs; read-only ones
share a lock, so nobody writes under them).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from krait.errors import ConfigError
from krait.guest import protocol
from krait.run import run

_MOUNT = re.compile(protocol.VOLUME_MOUNT)
_RAW_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
EXT4_MAGIC_OFFSET, EXT4_MAGIC = 1080, b"\x53\xef"
MIN_SIZE = 8 << 20  # ext4 with a journal wants a few MiB
MAX_SIZE = 16 << 40  # the largest file ext4 (4 KiB blocks) holds


@dataclass(frozen=True)
class Volume:
    path: Path
    target: str  # a mount point ("/data", "/mnt/x") or a raw volume's name
    readonly: bool = False

    @property
    def raw(self) -> bool:
        return not self.target.startswith("/")

    @property
    def env_var(self) -> str:
        return protocol.volume_env(self.target)

    def __str__(self) -> str:  # what parse() reads
        return f"{self.path}:{self.target}{':ro' if self.readonly else ''}"

    @classmethod
    def parse(cls, text: str) -> Volume:
        """FILE:/data, FILE:/mnt/NAME, FILE:NAME (raw), each with an optional :ro."""
        path, sep, rest = text.partition(":")
        target, _, mode = rest.partition(":")
        hint = ("--volume FILE:/data, FILE:/mnt/NAME or FILE:NAME (a raw disk), "
                "with :ro for read-only")
        if not sep or not path or mode not in ("", "ro", "rw"):
            raise ConfigError(f"--volume {text}: expected FILE:TARGET[:ro]", hint=hint)
        if not (_MOUNT.fullmatch(target) or _RAW_NAME.fullmatch(target)):
            raise ConfigError(f"--volume {text}: {target!r} is neither /data, /mnt/NAME nor "
                              "a raw volume's name", hint=hint)
        return cls(Path(path), target, mode == "ro")

    def check(self) -> None:
        """The file is there and, for a mount, an ext4 file system."""
        if not self.path.is_file():
            raise ConfigError(f"volume {self.path}: no such file",
                              hint=f"make one with `krait volume create {self.path} --size 256M`")
        if self.raw:
            return
        with self.path.open("rb") as f:
            f.seek(EXT4_MAGIC_OFFSET)
            magic = f.read(2)
        if magic != EXT4_MAGIC:
            raise ConfigError(f"volume {self.path}: not an ext4 file system, so it cannot be "
                              f"mounted at {self.target}",
                              hint="make one with `krait volume create FILE`, or attach it "
                              "as a raw disk: --volume FILE:NAME")


def create(path: Path, size: int, raw: bool = False, source: Path | None = None) -> None:
    """A new volume: ext4 made without root (mke2fs on a plain file), holding a copy of
    the folder ``source`` if given, or raw zeros. Whatever fails, nothing is left behind
    (a half-made file would make the retry say it exists)."""
    if os.path.lexists(path):  # a dangling symlink too: O_EXCL would not follow it
        raise ConfigError(f"{path} exists already", hint="pick another file, or remove it")
    if size < MIN_SIZE and not raw:
        raise ConfigError(f"--size {size} bytes is too small for ext4 (at least 8M)")
    if source is not None and not source.is_dir():
        raise ConfigError(f"--from {source}: not a folder")
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot make {path}: {e.strerror}",
                          hint="name a new file in a folder that exists and you may write") \
            from None
    try:
        try:
            os.ftruncate(fd, size)  # sparse: it takes room as it is written
        finally:
            os.close(fd)
        if not raw:
            populate = ["-d", str(source)] if source is not None else []
            # root_owner: the files are the app's (root in the guest), whoever made the disk.
            run([mke2fs, "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-L", "krait",
                 *populate, str(path)], timeout=120)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot make a {size}-byte volume at {path}: {e.strerror}",
                          hint="a smaller --size, or a file system that takes files this "
                          "large") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class VolumeLock:
    """Held for as long as a VM uses its volumes: exclusive for read-write ones."""

    def __init__(self, volumes: tuple[Volume, ...]) -> None:
        self._files = []
        try:
            for v in volumes:
                f = v.path.open("rb")
                self._files.append(f)
                try:
                    fcntl.flock(f, (fcntl.LOCK_SH if v.readonly else fcntl.LOCK_EX)
                                | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ConfigError(
                        f"volume {v.path} is in use by another VM"
                        + ("" if v.readonly else " (a read-write volume is one VM's at a time)"),
                        hint="stop that VM first, or attach it read-only (:ro) everywhere"
                    ) from None
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for f in self._files:
            f.close()  # closing the file drops its lock
        self._files = []
