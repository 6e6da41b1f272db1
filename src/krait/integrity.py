"""Is a file in the cache still what its digest says? Checked before each boot, and
hashed again only when the file was touched since it was last checked.

A file's identity when its digest was last checked sits beside it (``NAME.verified``):
inode, size, mtime and ctime. Any change to the file changes its ctime, which no one can
set back, so a boot re-reads a multi-megabyte disk or RAM file only if it was touched.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from krait.paths import open_nofollow, read_bounded, write_atomically


def sha256_file(path: Path) -> str:
    """The sha256 of the regular file ``path`` (a symlink there is an OSError)."""
    digest = hashlib.sha256()
    with open(open_nofollow(path), "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _identity(path: Path) -> list[int]:
    st = path.lstat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def remember_verified(path: Path) -> None:
    """``path`` was just checked (or written from checked bytes)."""
    write_atomically(_stamp(path), json.dumps(_identity(path)).encode())


def _ours(path: Path) -> bool:
    try:
        return path.lstat().st_uid == os.geteuid()
    except OSError:
        return False


def verified(path: Path, sha256: str) -> bool:
    """Is ``path`` (still) what ``sha256`` says? Never a file another user owns (they
    could change it after it was checked), nor on the word of a stamp they own."""
    if not _ours(path):
        return False
    try:
        if _ours(_stamp(path)) and json.loads(read_bounded(_stamp(path), 256)) == \
                _identity(path):
            return True
    except (OSError, ValueError):
        pass
    try:
        if sha256_file(path) != sha256:
            return False
    except OSError:
        return False
    remember_verified(path)
    return True
