"""Cache entries and images are written whole, under a name of their own, or not at all:
two builds at once share a cache, and an interrupted one leaves nothing half-written."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest

from krait.image import compile as compiled
from krait.image.archive import write_image
from krait.image.closure import GuestFile

from ._manifests import manifest

MAGIC = importlib.util.MAGIC_NUMBER.hex()


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def test_two_builds_at_once_share_the_bytecode_cache(tmp_path: Path) -> None:
    sources = []
    for i in range(20):
        src = tmp_path / "app" / f"m{i}.py"
        src.parent.mkdir(exist_ok=True)
        src.write_text(f"X = {i}\n")
        sources.append(GuestFile("app", f"/app/m{i}.pyc", src, "pyc"))
    results: list[dict[str, bytes]] = []
    threads = [threading.Thread(target=lambda: results.append(
        compiled.compile_all(sources, Path(sys.executable), MAGIC)[0])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and results[0] == results[1] == results[2]
    assert len(results[0]) == 20
    cache = compiled._cache("pyc")
    assert not leftovers(cache)
    # The cache then answers alone, byte for byte the same.
    assert compiled.compile_all(sources, Path(sys.executable), MAGIC) == (results[0], {})


def test_a_failed_image_write_leaves_the_old_image_and_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "app.krait"
    out.write_bytes(b"the image from before")

    class Broken(bytes):
        def __len__(self) -> int:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_image(out, manifest(), {"layer": Broken(b"x")})
    assert out.read_bytes() == b"the image from before"
    assert not leftovers(tmp_path)



def test_an_image_whose_manifest_names_a_path_is_refused(tmp_path: Path) -> None:
    # Its name becomes file names (snapshots, NAME.krait): "../x" must not get that far.
    from dataclasses import replace

    from krait.errors import ImageError
    from krait.image.archive import open_image

    out = tmp_path / "evil.krait"
    write_image(out, replace(manifest(), name="../../etc/evil"), {})
    with pytest.raises(ImageError, match="not a valid image name"):
        open_image(out)


def test_a_source_that_does_not_compile_is_named_and_left_out(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.py", tmp_path / "py2.py"
    good.write_text("X = 1\n")
    bad.write_text("print 'hello'\n")
    out, failed = compiled.compile_all([GuestFile("app", "/app/good.pyc", good, "pyc"),
                                        GuestFile("app", "/app/py2.pyc", bad, "pyc")],
                                       Path(sys.executable), MAGIC)
    assert set(out) == {"/app/good.pyc"}
    assert set(failed) == {str(bad)} and "SyntaxError" in failed[str(bad)]
