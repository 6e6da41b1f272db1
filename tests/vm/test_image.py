"""Image properties that need a real build: determinism, layers, contents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from krait.config import load_app
from krait.image.archive import open_image
from krait.image.build import build_image
from krait.kernel import Kernel

from .conftest import ROOT

pytestmark = pytest.mark.vm


def test_two_builds_give_the_same_digest(kernel: Kernel, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_app(ROOT / "examples" / "hello")
    first = build_image(app, kernel, tmp_path / "a.krait")
    # Second build from an empty layer cache, so nothing is reused.
    fresh = tmp_path / "cache"  # the kernel cache is apart (KRAIT_KERNEL_CACHE)
    monkeypatch.setenv("KRAIT_CACHE", str(fresh))
    second = build_image(app, kernel, tmp_path / "b.krait")
    assert second.cached_layers == []
    if first.digest != second.digest:  # say what differs, part by part
        a, b = open_image(first.path), open_image(second.path)
        changed = [p.name for p, q in zip(a.manifest.parts, b.manifest.parts, strict=False)
                   if p != q]
        pytest.fail(f"two builds differ in {changed or 'the manifest'}; cached layers of the "
                    f"first: {first.cached_layers}\n{first.manifest.to_json().decode()}\n"
                    f"{second.manifest.to_json().decode()}")
    assert (tmp_path / "a.krait").read_bytes() == (tmp_path / "b.krait").read_bytes()


def test_one_line_change_rebuilds_only_the_app_layer(kernel: Kernel, tmp_path: Path) -> None:
    folder = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "hello", folder,
                    ignore=shutil.ignore_patterns("*.krait"))
    build_image(load_app(folder), kernel)
    with (folder / "hello.py").open("a") as f:
        f.write("\nANSWER = 42\n")
    result = build_image(load_app(folder), kernel)
    assert "base" in result.cached_layers
    assert "app" not in result.cached_layers


def test_image_holds_one_interpreter_bytecode_and_no_shell(hello_image: Path) -> None:
    image = open_image(hello_image)
    entries = image.files()
    paths = {e.path for e in entries}
    runnable = sorted((e.path, e.runs) for e in entries if e.runs)
    interpreter = image.manifest.interpreter["path"]
    # The dynamic loader can run any ELF file it is given, and libc.so.6 runs too (it
    # prints its version): they count, as the only things besides the interpreter.
    assert runnable == [("/init", "script"), (interpreter, "program"),
                        ("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "loader"),
                        ("/usr/lib/x86_64-linux-gnu/libc.so.6", "program")]
    assert not any(p.endswith(("/sh", "/bash", "/busybox", "/pip", "/apt")) for p in paths)
    assert "/krait/app/hello.pyc" in paths and "/krait/app/hello.py" not in paths
    assert not any(p.endswith(".py") for p in paths)
    assert any(p.endswith("/asyncio/base_events.pyc") for p in paths)
    assert not any("/tkinter/" in p or "/unittest/" in p for p in paths)  # stdlib as used
    assert {e.layer for e in entries if e.path.startswith("/krait/app/")} == {"app"}
    assert {e.layer for e in entries if e.path.startswith("/usr/")} == {"base"}


def test_bytecode_is_unchecked_hash_based(hello_image: Path, tmp_path: Path) -> None:
    import subprocess

    from krait.image.archive import unpack_for_boot

    [app_disk] = [path for part, path in unpack_for_boot(open_image(hello_image)).disks
                  if part.name == "app"]
    out = tmp_path / "app"
    subprocess.run(["fsck.erofs", f"--extract={out}", app_disk], check=True,
                   capture_output=True)
    pyc = (out / "hello.pyc").read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, unchecked
