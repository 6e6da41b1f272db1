"""Volumes without a VM: parsing, making them (real mke2fs), checking, locking, and what
a boot tells the guest about them."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from krait.errors import ConfigError
from krait.guest import protocol
from krait.vmm.launch import RunOptions, boot_settings
from krait.vmm.volumes import Volume, VolumeLock, create

from ._manifests import image


def test_targets_are_a_mount_point_or_a_raw_name() -> None:
    assert Volume.parse("d.img:/data") == Volume(Path("d.img"), "/data", False)
    assert Volume.parse("d.img:/mnt/cache:ro") == Volume(Path("d.img"), "/mnt/cache", True)
    for text in ("d.img:/data", "d.img:/mnt/cache:ro", "b.img:blocks"):
        assert str(Volume.parse(text)) == text
    raw = Volume.parse("b.img:blocks")
    assert raw.raw and raw.env_var == "KRAIT_VOLUME_BLOCKS"
    for bad in ("d.img", "d.img:/etc", "d.img:/mnt/a/b", "d.img:/data:rx", ":/data",
                "d.img:../x"):
        with pytest.raises(ConfigError):
            Volume.parse(bad)


def test_a_volume_is_made_without_root_and_checked(tmp_path: Path) -> None:
    ext4, raw = tmp_path / "data.img", tmp_path / "raw.img"
    create(ext4, 16 << 20)
    create(raw, 1 << 20, raw=True)
    assert stat.S_IMODE(ext4.stat().st_mode) == 0o600
    assert ext4.stat().st_size == 16 << 20 and raw.stat().st_size == 1 << 20
    Volume(ext4, "/data").check()
    Volume(raw, "blocks").check()  # a raw volume may hold anything
    with pytest.raises(ConfigError, match="not an ext4 file system"):
        Volume(raw, "/data").check()
    with pytest.raises(ConfigError, match="no such file"):
        Volume(tmp_path / "none.img", "/data").check()
    with pytest.raises(ConfigError, match="exists already"):
        create(ext4, 16 << 20)


def test_read_write_is_exclusive_and_read_only_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "v.img"
    create(path, 1 << 20, raw=True)
    rw, ro = Volume(path, "v"), Volume(path, "v", readonly=True)
    first = VolumeLock((ro,))
    second = VolumeLock((ro,))  # readers share it
    with pytest.raises(ConfigError, match="in use by another VM"):
        VolumeLock((rw,))
    first.release()
    second.release()
    held = VolumeLock((rw,))
    with pytest.raises(ConfigError, match="in use by another VM"):
        VolumeLock((ro,))
    held.release()
    VolumeLock((rw,)).release()


def test_the_guest_is_told_each_volumes_device_after_the_boot_disk(tmp_path: Path) -> None:
    data, blocks = tmp_path / "data.img", tmp_path / "b.img"
    create(data, 16 << 20)
    create(blocks, 1 << 20, raw=True)
    img = image()  # two layers: /dev/vda, /dev/vdb; the boot disk is /dev/vdc
    options = RunOptions(volumes=(f"{data}:/data:ro", f"{blocks}:blocks"))
    assert protocol.decode_boot(boot_settings(img, options))["volumes"] == [
        {"device": "/dev/vdd", "target": "/data", "readonly": True, "raw": False},
        {"device": "/dev/vde", "target": "blocks", "readonly": False, "raw": True}]
    with pytest.raises(ConfigError, match="given twice"):
        boot_settings(img, RunOptions(volumes=(f"{data}:/data", f"{data}:/data")))


def test_an_image_that_expects_a_volume_does_not_boot_without(tmp_path: Path) -> None:
    img = image()
    img = replace(img, manifest=replace(img.manifest, settings={
        **img.manifest.settings, "volumes": ["/data"]}))
    with pytest.raises(ConfigError, match="expects a volume at /data"):
        boot_settings(img, RunOptions())


def test_the_fsync_benchmark_runs_one_loop_on_both_sides(tmp_path: Path) -> None:
    from krait.bench.volume import PROBE, fsync_latencies

    latencies = fsync_latencies(str(tmp_path / "f"), 5, 1)
    assert len(latencies) == 5 and all(s > 0 for s in latencies)
    namespace: dict[str, object] = {}
    exec(compile(PROBE, "probe", "exec"), namespace)  # what the guest runs: this very loop
    assert "main" in namespace and "fsync_latencies" in namespace


def test_create_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    from ._hostile import krait, refused

    (tmp_path / "dangling.img").symlink_to(tmp_path / "elsewhere" / "x.img")
    refused(krait("volume", "create", tmp_path / "dangling.img"), "exists already")
    refused(krait("volume", "create", tmp_path / "missing" / "d.img"),
            "No such file or directory")
    refused(krait("volume", "create", tmp_path / "d.img", "--size", "99999999G"),
            "expected at most 16384G")
    refused(krait("volume", "create", tmp_path / "d.img", "--from", tmp_path / "nope"),
            "not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.img"]
    ran = krait("volume", "create", tmp_path / "d.img", "--size", "16M")  # the retry works
    assert ran.returncode == 0, ran.stderr


def test_a_file_system_that_refuses_the_size_leaves_no_file(tmp_path: Path) -> None:
    # As a file system without room for a file this large would: a limit on file sizes
    # (Python ignores SIGXFSZ, so ftruncate fails with EFBIG).
    import resource

    saved = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, saved[1]))
    try:
        with pytest.raises(ConfigError, match="cannot make a 67108864-byte volume"):
            create(tmp_path / "d.img", 64 << 20, raw=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved)
    assert not (tmp_path / "d.img").exists()
