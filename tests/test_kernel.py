"""The kernel recipe: fragments, the options check, the cache key, a missing source."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.errors import KernelError
from krait.kernel import build as kb


def test_fragments_exist_and_set_what_python_needs() -> None:
    wanted = kb.wanted_options(kb.merged_config())
    for option in ("CONFIG_VIRTIO_NET", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", "CONFIG_PVH",
                   "CONFIG_EPOLL", "CONFIG_FUTEX", "CONFIG_BLOCK", "CONFIG_VIRTIO_BLK",
                   "CONFIG_IP_PNP", "CONFIG_BLK_DEV_INITRD"):
        assert wanted.get(option) == "y", option
    # The page-alignment patch is only safe with these off.
    assert wanted["CONFIG_PAGE_TABLE_ISOLATION"] == "n"
    assert wanted["CONFIG_AMD_MEM_ENCRYPT"] == "n"


def test_options_lost_to_kconfig_are_an_error(tmp_path: Path) -> None:
    dotconfig = tmp_path / ".config"
    dotconfig.write_text("CONFIG_BLOCK=y\n# CONFIG_VIRTIO_BLK is not set\n")
    with pytest.raises(KernelError) as e:
        kb._check_config(dotconfig, {"CONFIG_BLOCK": "y", "CONFIG_VIRTIO_BLK": "y"})
    assert "CONFIG_VIRTIO_BLK=y" in e.value.message
    kb._check_config(dotconfig, {"CONFIG_BLOCK": "y", "CONFIG_NOT_THERE": "n"})


def test_cache_key_follows_source_version_and_config() -> None:
    a = kb.cache_key("6.1.192-2", "CONFIG_A=y\n")
    assert a == kb.cache_key("6.1.192-2", "CONFIG_A=y\n")
    assert a != kb.cache_key("6.1.193-1", "CONFIG_A=y\n")
    assert a != kb.cache_key("6.1.192-2", "CONFIG_A=y\nCONFIG_B=y\n")


def test_missing_source_package_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kb.glob, "glob", lambda pattern: [])
    with pytest.raises(KernelError) as e:
        kb.find_source()
    assert "not installed" in e.value.message
    assert e.value.hint is not None and "apt-get install linux-source-6.1" in e.value.hint


def test_patches_are_unified_diffs_for_the_x86_linker_script() -> None:
    patches = kb.patch_files()
    assert patches, "krait's kernel patches are missing from the package"
    text = patches[0].read_text()
    assert "+++ b/arch/x86/kernel/vmlinux.lds.S" in text
