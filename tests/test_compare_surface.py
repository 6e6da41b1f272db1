"""Attack-surface counting for `krait bench compare`, on small fake roots."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from krait.bench.compare.surface import (
    count_surface,
    installed_packages,
    surface_of_image,
    surface_of_tree,
    tree_bytes,
)
from krait.image.archive import open_image
from krait.image.entry import Entry
from krait.image.erofs import listing

from ._manifests import crafted

DPKG_STATUS = """\
Package: bash
Status: install ok installed
Version: 5.2

Package: libc6
Status: install ok installed
Version: 2.36

Package: oldthing
Status: deinstall ok config-files
Version: 1
"""


def _file(root: Path, rel: str, mode: int = 0o644, data: bytes = b"x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def fake_root(root: Path) -> Path:
    _file(root, "usr/bin/bash", 0o755, b"#bash" * 10)
    _file(root, "usr/bin/python3.11", 0o755, b"elf" * 100)
    _file(root, "usr/bin/passwd", 0o4755)
    _file(root, "usr/bin/wall", 0o2755)  # setgid counts as well
    _file(root, "usr/lib/libc.so.6", 0o644)
    _file(root, "etc/passwd", 0o644)
    _file(root, "etc/sh", 0o755)  # a "sh" outside a bin folder is not a shell
    _file(root, "var/lib/dpkg/status", 0o644, DPKG_STATUS.encode())
    (root / "usr/bin/sh").symlink_to("bash")
    (root / "usr/bin/python3").symlink_to("python3.11")
    (root / "empty").mkdir()
    return root


def test_tree_counts_each_kind(tmp_path: Path) -> None:
    s = surface_of_tree(fake_root(tmp_path / "root"))
    # 8 regular files + 2 symlinks; folders are not files
    assert s == {"files": 10, "executables": 5, "setuid": 2, "shells": 2, "packages": 2}


def test_tree_bytes_counts_regular_files_only(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "root")
    expected = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                   and not p.is_symlink())
    assert tree_bytes(root) == expected


def test_no_package_database_means_zero_packages() -> None:
    assert installed_packages(None) == 0
    assert installed_packages("") == 0
    assert installed_packages(DPKG_STATUS) == 2


def test_count_surface_from_entries() -> None:
    entries = [("/bin", stat.S_IFDIR | 0o755), ("/bin/busybox", stat.S_IFREG | 0o755),
               ("/bin/ash", stat.S_IFLNK | 0o777), ("/init", stat.S_IFREG | 0o755),
               ("/lib/x.py", stat.S_IFREG | 0o644), ("/dev/console", stat.S_IFCHR | 0o600)]
    assert count_surface(entries) == {"files": 5, "executables": 2, "setuid": 0, "shells": 2,
                                      "packages": 0}


def test_image_layers_are_counted(tmp_path: Path) -> None:
    layer_a = listing([Entry.folder("/usr"), Entry.folder("/usr/bin"),
                       Entry.file("/usr/bin/python3.11", b"elf", executable=True),
                       Entry.file("/init", b"#!", executable=True)])
    layer_b = listing([Entry.file("/krait/app/app.pyc", b"pyc"),
                       Entry.symlink("/krait/app/python3", "python3.11")])
    img = open_image(crafted(tmp_path / "x.krait", listings={
        "base": json.loads(layer_a), "app": json.loads(layer_b)}))
    assert surface_of_image(img) == {"files": 4, "executables": 2, "setuid": 0,
                                     "shells": 0, "packages": 0}
