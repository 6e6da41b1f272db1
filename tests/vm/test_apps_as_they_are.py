"""Ordinary apps, written without krait in mind, as a new user arrives with them: a bare
folder (source + pyproject.toml or krait.toml + requirements.txt, no environment, no
lock), built on this machine for the first time, booted, and asked real questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import TraceError
from krait.image.archive import open_image
from krait.image.build import build_image
from krait.kernel import Kernel

from ._examples import TEST_APPS, bare_copy, get_json, request
from .conftest import Boot, krait_cli

pytestmark = pytest.mark.vm


def build_bare(name: str, kernel: Kernel, tmp_path: Path) -> tuple[Path, Path]:
    folder = bare_copy(TEST_APPS / name, tmp_path)
    assert not (folder / "krait.lock").exists() and not (folder / ".venv").exists()
    return build_image(load_app(folder), kernel).path, folder


def test_flask_app_with_templates_and_static_files(kernel: Kernel, tmp_path: Path,
                                                   no_leftover_qemu: None, booted: Boot) -> None:
    image, folder = build_bare("flask_templates", kernel, tmp_path)
    lock = (folder / "krait.lock").read_text()  # made by the first build, to be committed
    assert "flask==" in lock and "--hash=sha256:" in lock
    manifest = open_image(image).manifest
    assert {"flask", "jinja2", "werkzeug"} <= set(manifest.dependencies.packages)
    # Nothing of the environment krait itself runs in.
    assert not [m for m in manifest.modules
                if m.startswith(("rich", "zstandard", "qemu", "psutil", "krait.image"))]
    with booted(image) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200, body
        assert b"<li>kettle</li>" in body and b"<li>&lt;script&gt;</li>" in body
        assert request(vm.url("/item/2"))[2].endswith(b"<main><h1>&lt;SCRIPT&gt;</h1></main>")
        assert request(vm.url("/static/style.css"))[2] == b"body { color: teal }\n"


def test_fastapi_with_pydantic(kernel: Kernel, tmp_path: Path, no_leftover_qemu: None,
                               booted: Boot) -> None:
    image, _ = build_bare("fastapi_pydantic", kernel, tmp_path)
    with booted(image) as vm:
        # A sync endpoint runs in anyio's worker thread: anyio picks its backend module by
        # a name built at run time, which the image must hold all the same.
        assert get_json(vm.url("/orders"), "POST", {"item": "tea", "quantity": 2}) == (
            201, {"id": 1, "item": "tea", "quantity": 2})
        assert get_json(vm.url("/orders/1")) == (200, {"item": "tea", "quantity": 2})
        status, error = get_json(vm.url("/orders"), "POST", {"item": "", "quantity": 0})
        assert status == 422
        assert {e["type"] for e in error["detail"]} == {"string_too_short", "greater_than"}
        assert get_json(vm.url("/orders/9"))[0] == 404


def test_numpy_at_its_default_memory(kernel: Kernel, tmp_path: Path,
                                     no_leftover_qemu: None, booted: Boot) -> None:
    image, _ = build_bare("numpy_lazy", kernel, tmp_path)
    manifest = open_image(image).manifest
    assert manifest.boot.memory == manifest.memory.default_mib
    assert "numpy.random" in manifest.modules  # imported lazily, found in numpy's source
    with booted(image) as vm:  # no --memory: what the build measured
        status, _, body = request(vm.url("/"))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["numpy"].startswith("2.") and answer["mean"] == 2.5
        assert abs(answer["identity"] - 40.0) < 1e-9


def test_processes_fork_spawn_pools_and_child_interpreters(kernel: Kernel, tmp_path: Path,
                                                          no_leftover_qemu: None) -> None:
    image, _ = build_bare("processes", kernel, tmp_path)
    proc = krait_cli("run", image, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "workers: fork_pool = [0, 1, 4, 9, 16, 25]" in out
    assert "workers: spawn_pool = [0, 1, 4, 9]" in out
    assert "workers: process_pool = [0, 1, 4, 9, 16]" in out
    assert "workers: queue_and_lock = [True, 0]" in out
    assert "workers: child_interpreter = '21'" in out
    assert "workers: plain_fork = 7" in out
    # The interpreter is still the only program (besides libc.so.6, which prints its
    # version) and /init the only script.
    runnable = {f.path: f.runs for f in open_image(image).files() if f.runs in ("program",
                                                                            "script")}
    assert runnable == {"/init": "script", "/usr/bin/python3.11": "program",
                        "/usr/lib/x86_64-linux-gnu/libc.so.6": "program"}


def test_zoneinfo_from_the_tzdata_package(kernel: Kernel, tmp_path: Path,
                                          no_leftover_qemu: None) -> None:
    image, _ = build_bare("zoneinfo_tzdata", kernel, tmp_path)
    proc = krait_cli("run", image, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "clock: Europe/Paris 2026-07-01T14:00:00+02:00" in proc.stdout
    assert "clock: Asia/Tokyo 2026-07-01T21:00:00+09:00" in proc.stdout
    assert "clock: cp1252 b'caf\\xe9' utf-16 4" in proc.stdout


def test_krait_toml_with_a_requirements_txt(kernel: Kernel, tmp_path: Path,
                                            no_leftover_qemu: None) -> None:
    image, folder = build_bare("requirements_txt", kernel, tmp_path)
    assert "attrs==" in (folder / "krait.lock").read_text()
    proc = krait_cli("run", image, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeter: hello, krait (attrs " in proc.stdout


def test_an_undeclared_import_is_refused_at_build(kernel: Kernel, tmp_path: Path) -> None:
    folder = bare_copy(TEST_APPS / "undeclared", tmp_path)
    with pytest.raises(TraceError) as refused:
        build_image(load_app(folder), kernel)
    assert "the app imports `requests`" in refused.value.message
    assert "add `requests` to pyproject.toml [project].dependencies" in (refused.value.hint or "")
    assert not list(folder.glob("*.krait"))
