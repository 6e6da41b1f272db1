"""krait.image.closure: which host files an image needs and where they go."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from krait.errors import BuildError
from krait.guest import protocol
from krait.image.closure import (
    GuestFile,
    _excluded,
    elf_closure,
    host_path_files,
    kept_modules,
    plan_files,
)
from krait.image.trace import Trace

PYTHON = Path(sys.executable).resolve()


# -- the ELF closure -------------------------------------------------------------------------


def test_elf_closure_of_the_interpreter() -> None:
    closure = elf_closure([PYTHON])
    assert PYTHON in closure
    names = [p.name for p in closure]
    assert any(n == "libc.so.6" or n.startswith("libc.so") for n in names), names
    assert any(n.startswith(("ld-linux", "ld64.so", "ld-musl")) for n in names), names
    assert closure == sorted(set(closure))
    assert all(p.is_absolute() and p.exists() for p in closure)


def test_elf_closure_of_a_non_elf_file_is_a_build_error(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(BuildError, match="cannot list the libraries"):
        elf_closure([script])


def test_elf_closure_is_closed() -> None:
    closure = elf_closure([PYTHON])
    assert elf_closure(closure) == closure


# -- symlinks on the way to a file -----------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/lib -> usr/lib, root/usr/lib/libfoo.so.1 -> libfoo.so.1.2, root/abs -> root/usr."""
    root = tmp_path.resolve()
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "libfoo.so.1.2").write_bytes(b"\x7fELF")
    (root / "usr" / "lib" / "libfoo.so.1").symlink_to("libfoo.so.1.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "abs").symlink_to(root / "usr")
    return root


def test_host_path_files_plain_file(tree: Path) -> None:
    target = tree / "usr" / "lib" / "libfoo.so.1.2"
    assert host_path_files(target) == [GuestFile("base", str(target), target, "elf")]


def test_host_path_files_through_a_symlinked_folder(tree: Path) -> None:
    files = host_path_files(tree / "lib" / "libfoo.so.1.2")
    real = tree / "usr" / "lib" / "libfoo.so.1.2"
    assert files == [
        GuestFile("base", str(tree / "lib"), Path("usr/lib"), "symlink"),
        GuestFile("base", str(real), real, "elf"),
    ]


def test_host_path_files_through_two_symlinks(tree: Path) -> None:
    files = host_path_files(tree / "lib" / "libfoo.so.1")
    real = tree / "usr" / "lib" / "libfoo.so.1.2"
    assert [(f.guest, f.host, f.how) for f in files] == [
        (str(tree / "lib"), Path("usr/lib"), "symlink"),
        (str(tree / "usr" / "lib" / "libfoo.so.1"), Path("libfoo.so.1.2"), "symlink"),
        (str(real), real, "elf"),
    ]
    assert all(f.layer == "base" for f in files)


def test_host_path_files_absolute_symlink(tree: Path) -> None:
    files = host_path_files(tree / "abs" / "lib" / "libfoo.so.1.2")
    assert files[0] == GuestFile("base", str(tree / "abs"), tree / "usr", "symlink")
    assert files[-1].guest == str(tree / "usr" / "lib" / "libfoo.so.1.2")
    assert files[-1].how == "elf"


def test_host_path_files_reproduces_the_host() -> None:
    """Following the symlinks the files describe ends at the real file, as on the host."""
    libc = next(p for p in elf_closure([PYTHON]) if p.name.startswith("libc.so"))
    files = host_path_files(libc)
    assert files[-1].how == "elf"
    assert Path(files[-1].guest) == Path(os.path.realpath(libc))
    for f in files[:-1]:
        assert f.how == "symlink"
        assert Path(f.guest).is_symlink()
        assert os.readlink(f.guest) == str(f.host)


# -- exclusion -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "excluded"), [
    ("ssl", True), ("ssl.x", True), ("_ssl", True), ("ssl.x.y", True),
    ("sslx", False), ("_sslx", False), ("x.ssl", False), ("_ssl.x", False), ("__ssl", False),
    ("asyncio", False),
])
def test_excluded(name: str, excluded: bool) -> None:
    assert _excluded(name, ("ssl",)) is excluded


def test_excluded_nothing() -> None:
    assert not _excluded("ssl", ())


def test_excluded_several() -> None:
    assert _excluded("_decimal", ("ssl", "decimal"))
    assert not _excluded("json", ("ssl", "decimal"))


# -- planning from a trace ----------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Trace, Path]:
    """A trace of a tiny app, with a fake standard library in the tmp folder."""
    base = tmp_path.resolve()
    app = base / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "hello.py").write_text("import json\n")
    (app / "pkg" / "__init__.py").write_text("")
    (app / "pkg" / "util.py").write_text("")
    (app / "static").mkdir()
    (app / "static" / "index.html").write_text("<p>hi</p>")
    stdlib = base / "stdlib"
    (stdlib / "json").mkdir(parents=True)
    (stdlib / "json" / "__init__.py").write_text("")
    (stdlib / "os.py").write_text("")
    (stdlib / "ssl.py").write_text("")
    dynload = stdlib / "lib-dynload"
    dynload.mkdir()
    trace = Trace(
        executable=PYTHON,
        version=(3, 11, 0),
        magic="a70d0d0a",
        stdlib=stdlib,
        dynload=dynload,
        path=(app, stdlib, dynload),
        modules={
            "hello": app / "hello.py",
            "pkg": app / "pkg" / "__init__.py",
            "pkg.util": app / "pkg" / "util.py",
            "json": stdlib / "json" / "__init__.py",
            "os": stdlib / "os.py",
            "ssl": stdlib / "ssl.py",
        },
        shared_objects=(),
        distributions={},
        packages={},
        startup=frozenset(),
        runtime=base / "runtime",
    )
    return trace, app


def test_plan_files_places_app_and_stdlib(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    files = plan_files(trace, app, include=())
    by_guest = {f.guest: f for f in files}
    assert files == sorted(files)
    assert len(by_guest) == len(files)

    hello = by_guest[f"{protocol.APP_DIR}/hello.pyc"]
    assert (hello.layer, hello.host, hello.how) == ("app", app / "hello.py", "pyc")
    util = by_guest[f"{protocol.APP_DIR}/pkg/util.pyc"]
    assert (util.layer, util.host, util.how) == ("app", app / "pkg" / "util.py", "pyc")
    assert f"{protocol.APP_DIR}/pkg/__init__.pyc" in by_guest
    assert f"{protocol.APP_DIR}/hello.py" not in by_guest  # no sources by default

    json_init = trace.stdlib / "json" / "__init__.py"
    js = by_guest[str(json_init.with_suffix(".pyc"))]
    assert (js.layer, js.host, js.how) == ("base", json_init, "pyc")
    assert str(trace.stdlib / "ssl.pyc") in by_guest
    assert str(trace.stdlib / "os.pyc") in by_guest

    app_files = [f for f in files if f.layer == "app"]
    assert all(f.guest.startswith(protocol.APP_DIR + "/") for f in app_files)
    # The traced modules, and the app folder's data files as they are.
    assert {f.host for f in app_files} == {app / "hello.py", app / "pkg" / "__init__.py",
                                           app / "pkg" / "util.py",
                                           app / "static" / "index.html"}
    # The interpreter itself, at its host path, in the base layer.
    interp = by_guest[str(PYTHON)]
    assert (interp.layer, interp.how) == ("base", "elf")
    assert any(Path(f.guest).name.startswith("libc.so") for f in files)


def test_plan_files_exclude(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    guests = {f.guest for f in plan_files(trace, app, include=(), exclude=("ssl",))}
    assert str(trace.stdlib / "ssl.pyc") not in guests
    assert str(trace.stdlib / "json" / "__init__.pyc") in guests


def test_plan_files_sources(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    by_guest = {f.guest: f for f in plan_files(trace, app, include=(), sources=True)}
    src = by_guest[f"{protocol.APP_DIR}/hello.py"]
    assert (src.layer, src.how) == ("app", "copy")
    assert f"{protocol.APP_DIR}/hello.pyc" in by_guest


def test_plan_files_include(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app / ".well-known").mkdir()
    (app / ".well-known" / "security.txt").write_text("contact: x")
    by_guest = {f.guest: f for f in plan_files(trace, app, include=(".well-known",))}
    page = by_guest[f"{protocol.APP_DIR}/.well-known/security.txt"]
    assert (page.layer, page.how) == ("app", "copy")


def test_app_data_leaves_out_build_files_environments_tests_and_keys(
        fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    for name in ("pyproject.toml", "krait.lock", "requirements.txt", "key.pem", "old.krait",
                 ".env", "tests/test_x.py", "tests/data.json", ".venv/pyvenv.cfg",
                 "venv/pyvenv.cfg", "venv/lib/x.txt", "__pycache__/x.pyc", "data/big.csv",
                 "data/keep.json", "templates/page.html"):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("x")
    guests = {f.guest.removeprefix(protocol.APP_DIR + "/")
              for f in plan_files(trace, app, include=(), ignore=("data/*.csv",))
              if f.layer == "app" and f.how == "copy"}
    assert guests == {"static/index.html", "data/keep.json", "templates/page.html"}


def test_plan_files_include_outside_app(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app.parent / "secret.txt").write_text("no")
    with pytest.raises(BuildError) as info:
        plan_files(trace, app, include=("../secret.txt",))
    assert "outside the app folder" in info.value.message


def test_plan_files_include_missing(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    with pytest.raises(BuildError, match="does not exist"):
        plan_files(trace, app, include=("nope",))


def test_plan_files_module_outside_sys_path(fake: tuple[Trace, Path], tmp_path: Path) -> None:
    trace, app = fake
    stray = tmp_path / "elsewhere" / "stray.py"
    stray.parent.mkdir()
    stray.write_text("")
    modules = {**trace.modules, "stray": stray}
    bad = Trace(**{**trace.__dict__, "modules": modules})
    with pytest.raises(BuildError, match=r"outside the app's sys\.path"):
        plan_files(bad, app, include=())


def test_kept_modules_keeps_site_and_drops_startup_extras(fake: tuple[Trace, Path],
                                                         tmp_path: Path) -> None:
    trace, app = fake
    hook = tmp_path / "site-packages" / "_virtualenv.py"
    hook.parent.mkdir()
    hook.write_text("")
    modules = {**trace.modules, "site": trace.stdlib / "os.py", "_virtualenv": hook,
               "sitecustomize": trace.stdlib / "os.py"}
    t = Trace(**{**trace.__dict__, "modules": modules,
                 "startup": frozenset({"os", "_virtualenv", "site", "sitecustomize"})})
    kept = kept_modules(t, exclude=("ssl",))
    assert "_virtualenv" not in kept
    assert "sitecustomize" not in kept  # the build host's
    assert "site" in kept  # a child interpreter (subprocess, spawn) imports it
    assert "ssl" not in kept
    assert kept["os"] == trace.stdlib / "os.py"
    assert kept["hello"] == app / "hello.py"


def test_kept_modules_adds_what_the_sources_import(fake: tuple[Trace, Path]) -> None:
    trace, _ = fake
    t = Trace(**{**trace.__dict__, "static": {"csv": trace.stdlib / "os.py",
                                              "ssl.extra": trace.stdlib / "ssl.py"}})
    kept = kept_modules(t, exclude=("ssl",))
    assert "csv" in kept and "ssl.extra" not in kept
