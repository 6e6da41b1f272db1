"""krait's own folders (state, cache, kernel cache) are trusted only if they are the user's
alone: another local user's folder, one others may write, or a symlink planted inside is
refused with an error naming it, and nothing behind a link is touched."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from krait.errors import ConfigError
from krait.paths import cache_dir, checked_root, kernel_cache_dir, krait_dir, locked

from ._hostile import NOBODY, krait, refused, tree

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every local user can reach (tmp_path is root's alone), as /tmp is."""
    folder = Path(tempfile.mkdtemp(prefix="krait-two-users-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def victim(folder: Path) -> Path:
    """Someone's folder with subfolders old enough to look like orphaned instances."""
    folder.mkdir(mode=0o755)
    for name in ("photos", "thesis"):
        (folder / name).mkdir()
        (folder / name / "instance.json").write_text("{}")
        old = time.time() - 7200
        os.utime(folder / name, (old, old))
    return folder


def test_ps_refuses_a_state_folder_others_may_write_and_follows_no_link(tmp_path: Path) -> None:
    precious = victim(tmp_path / "P")
    before = tree(precious)
    state = tmp_path / "S"
    state.mkdir()
    state.chmod(0o777)  # as a shared folder is
    (state / "instances").symlink_to(precious)  # planted there by another user
    os.lchown(state / "instances", NOBODY, NOBODY)
    ran = krait("ps", env={"KRAIT_STATE": str(state)})
    refused(ran, str(state), "writable by other users", "chmod go-w")
    # The user closes the folder, but the link is still in it.
    state.chmod(0o700)
    ran = krait("ps", env={"KRAIT_STATE": str(state)})
    refused(ran, str(state / "instances"), "is a symlink")
    assert tree(precious) == before  # nothing removed, nothing chmod'ed


@root_only
def test_build_refuses_a_cache_another_user_owns_before_anything_in_it_runs(
        tmp_path: Path) -> None:
    from krait.image.trace import runtime_root

    # Where the build would look for its guest runtime, planted by another user.
    runtime = runtime_root().relative_to(cache_dir())
    theirs = tmp_path / "their-cache"
    marker = tmp_path / "ran"
    planted = theirs / runtime / "krait" / "guest"
    planted.mkdir(parents=True)
    (planted / "init.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for path in [theirs, *theirs.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o777)
    app = tmp_path / "app"
    app.mkdir()
    (app / "krait.toml").write_text('entry = "app:main"\n')
    (app / "app.py").write_text("def main():\n    return 0\n")
    ran = krait("build", app, "--kernel", "/usr/bin/true", env={"KRAIT_CACHE": str(theirs)})
    refused(ran, str(theirs), "belongs to another user (uid 65534)")
    assert not marker.exists()
    assert not list(app.glob("*.krait"))


@root_only
def test_another_user_running_krait_refuses_folders_that_are_not_theirs(
        shared_tmp: Path) -> None:
    state, cache = shared_tmp / "state", shared_tmp / "cache"
    state.mkdir(mode=0o755)
    cache.mkdir(mode=0o755)
    ran = krait("ps", env={"KRAIT_STATE": str(state)}, as_nobody=True)
    refused(ran, str(state), "belongs to another user (uid 0)")
    ran = krait("snapshot", "ls", env={"KRAIT_CACHE": str(cache)}, as_nobody=True)
    refused(ran, str(cache), "belongs to another user (uid 0)")
    # Their own folders work.
    mine = shared_tmp / "theirs"
    mine.mkdir()
    os.chown(mine, NOBODY, NOBODY)
    ran = krait("ps", env={"KRAIT_STATE": str(mine / "state")}, as_nobody=True)
    assert ran.returncode == 0, ran.stderr
    assert (mine / "state" / "instances").stat().st_uid == NOBODY


@root_only
def test_what_others_planted_in_the_cache_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KRAIT_CACHE", str(cache))
    assert cache_dir() == cache
    disks = cache / "disks"
    disks.mkdir()
    os.chown(disks, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to another user"):
        cache_dir()
    shutil.rmtree(disks)
    (cache / "disks").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="is a symlink"):
        cache_dir()
    (cache / "disks").unlink()
    (cache / "disks").mkdir()
    (cache / "disks").chmod(0o775)
    with pytest.raises(ConfigError, match="writable by other users"):
        cache_dir()
    (cache / "disks").chmod(0o755)
    (cache / "pulled").write_text("")
    os.chown(cache / "pulled", NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="not yours alone"):
        cache_dir()


def test_folders_krait_makes_are_checked_level_by_level(tmp_path: Path) -> None:
    root = checked_root(tmp_path / "root")
    assert krait_dir(root, "a", "b") == root / "a" / "b"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "a" / "c").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="is a symlink"):
        krait_dir(root, "a", "c", "d")
    assert not (elsewhere / "d").exists()
    with pytest.raises(ValueError):
        krait_dir(root, "..")
    # Made with krait's modes whatever the umask.
    old = os.umask(0o000)
    try:
        made = krait_dir(root, "open")
        private = krait_dir(root, "closed", private=True)
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == 0o755
    assert private.stat().st_mode & 0o777 == 0o700


def test_the_kernel_cache_is_a_root_checked_on_its_own(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    monkeypatch.setenv("KRAIT_KERNEL_CACHE", str(kernels))
    assert kernel_cache_dir() == kernels
    kernels.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by other users"):
        kernel_cache_dir()
    monkeypatch.delenv("KRAIT_KERNEL_CACHE")
    assert kernel_cache_dir() == cache_dir() / "kernel"


def test_a_lock_file_is_never_reached_through_a_link(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    (tmp_path / ".lock").symlink_to(precious)
    with pytest.raises(ConfigError, match="cannot lock"), locked(tmp_path / ".lock"):
        pass
    assert precious.read_text() == "keep me"
    with locked(tmp_path / "fresh.lock"):
        assert (tmp_path / "fresh.lock").is_file()


@root_only
def test_a_disk_another_user_planted_in_the_cache_is_never_shipped(tmp_path: Path) -> None:
    # Finding 2: a planted disks/<sha>.erofs with a forged .verified stamp was exported as
    # the app's disk. A file krait did not write is unpacked again, over it.
    import hashlib
    import json
    import tarfile

    from ._manifests import crafted

    image = crafted(tmp_path / "app.krait", layers={"base": b"the real disk"})
    cache = tmp_path / "cache"
    disks = krait_dir(checked_root(cache), "disks")
    planted = disks / f"{hashlib.sha256(b'the real disk').hexdigest()}.erofs"
    planted.write_bytes(b"EVIL")
    st = planted.lstat()
    stamp = planted.with_name(planted.name + ".verified")
    stamp.write_text(json.dumps([st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]))
    for path in (planted, stamp):
        os.chown(path, NOBODY, NOBODY)
    ran = krait("export", image, "--oci", tmp_path / "layout", env={"KRAIT_CACHE": str(cache)})
    assert ran.returncode == 0, ran.stderr
    blobs = sorted((tmp_path / "layout" / "blobs" / "sha256").iterdir(),
                   key=lambda p: p.stat().st_size)
    with tarfile.open(blobs[-1]) as tar:
        assert tar.extractfile("disks/0-base.erofs").read() == b"the real disk"  # type: ignore[union-attr]
    assert planted.read_bytes() == b"the real disk" and planted.lstat().st_uid == 0
