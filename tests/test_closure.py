"""krait.image.closure: which host files an image needs and where they go."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from krait.errors import BuildError
from krait.guest import protocol
from krait.image.closure import GuestFile, _excluded, host_path_files, kept_modules, plan_files
from krait.image.context import app_files
from krait.image.elf import elf_closure, libc_dlopens
from krait.image.trace import Distribution, Trace

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


def test_the_library_libc_opens_for_pthread_exit_comes_with_it() -> None:
    """CPython ends daemon threads with pthread_exit at shutdown; glibc then dlopens
    libgcc_s, which no DT_NEEDED names (the interpreter aborts without it)."""
    closure = elf_closure([PYTHON])
    libc = next(p for p in closure if p.name == "libc.so.6")
    assert libc_dlopens(closure) == [libc.parent / "libgcc_s.so.1"]
    assert libc_dlopens([PYTHON]) == []  # no C library, nothing it opens


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
    (app / "pkg" / "later.py").write_text("")  # imported by name at run time
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


def plan(trace: Trace, app: Path, include: tuple[str, ...] = (), sources: bool = False,
         exclude: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> list[GuestFile]:
    return plan_files(trace, app, app_files(app, ignore, exclude), include, sources,
                      exclude).files


def test_plan_files_places_app_and_stdlib(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    files = plan(trace, app)
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

    in_app = [f for f in files if f.layer == "app"]
    assert all(f.guest.startswith(protocol.APP_DIR + "/") for f in in_app)
    # The whole app folder: its modules, whether traced or not, and its data as it is.
    assert {f.host for f in in_app} == {app / "hello.py", app / "pkg" / "__init__.py",
                                        app / "pkg" / "util.py", app / "pkg" / "later.py",
                                        app / "static" / "index.html"}
    # The interpreter itself, at its host path, in the base layer.
    interp = by_guest[str(PYTHON)]
    assert (interp.layer, interp.how) == ("base", "elf")
    assert any(Path(f.guest).name.startswith("libc.so") for f in files)


def test_plan_files_exclude(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    guests = {f.guest for f in plan(trace, app, exclude=("ssl", "pkg.later"))}
    assert str(trace.stdlib / "ssl.pyc") not in guests
    assert str(trace.stdlib / "json" / "__init__.pyc") in guests
    assert f"{protocol.APP_DIR}/pkg/later.pyc" not in guests
    assert f"{protocol.APP_DIR}/pkg/util.pyc" in guests


def test_plan_files_sources(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    by_guest = {f.guest: f for f in plan(trace, app, sources=True)}
    src = by_guest[f"{protocol.APP_DIR}/hello.py"]
    assert (src.layer, src.how) == ("app", "copy")
    assert f"{protocol.APP_DIR}/hello.pyc" in by_guest


def test_a_stdlib_package_brings_its_data_and_the_scripts_it_runs(
        fake: tuple[Trace, Path]) -> None:
    """As the test package runs test/subprocessdata/fd_status.py and tf_inherit_check.py
    as files, and reads its certificates: they come with it, as sources where they are
    Python. Its subpackages' data come only with them; its modules stay bytecode."""
    trace, app = fake
    test = trace.stdlib / "test"
    (test / "subprocessdata").mkdir(parents=True)
    (test / "sub").mkdir()
    (test / "__init__.py").write_text("")
    (test / "test_tempfile.py").write_text(
        'tester = os.path.join(here,\n     "tf_inherit_check.py")\nimport test.sub\n'
        '"""A word in prose, as in: see \'unnamed_helper.py\'."""\n')
    (test / "test_subprocess.py").write_text('findfile("fd_status.py", "subprocessdata")\n'
                                             'also = "__init__.py", "test_tempfile.py"\n')
    (test / "tf_inherit_check.py").write_text("print('run as a script')\n")
    (test / "unnamed_helper.py").write_text("")
    (test / "keycert.pem").write_text("PEM")
    (test / "subprocessdata" / "fd_status.py").write_text("")
    (test / "sub" / "__init__.py").write_text("")
    (test / "sub" / "data.json").write_text("{}")
    trace.modules.update({"test": test / "__init__.py",
                          "test.test_tempfile": test / "test_tempfile.py",
                          "test.test_subprocess": test / "test_subprocess.py"})
    trace.packages["test"] = [str(test)]
    by_guest = {f.guest: f for f in plan(trace, app)}
    for path in (test / "tf_inherit_check.py", test / "keycert.pem",
                 test / "subprocessdata" / "fd_status.py"):
        assert (by_guest[str(path)].layer, by_guest[str(path)].how) == ("base", "copy")
    assert by_guest[str(test / "test_tempfile.pyc")].how == "pyc"
    # Named, but a module of the standard library: its source would be imported instead.
    assert str(test / "test_tempfile.py") not in by_guest
    assert str(test / "test_subprocess.py") not in by_guest  # bytecode only
    assert str(test / "__init__.py") not in by_guest  # named by code that walks packages
    assert str(test / "unnamed_helper.py") not in by_guest
    assert str(test / "sub" / "data.json") not in by_guest  # test.sub never imported


def test_a_helper_script_of_the_app_is_shipped_as_source(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app / "hello.py").write_text(
        'import subprocess, sys\nsubprocess.run([sys.executable, "worker.py"])\n')
    (app / "worker.py").write_text("print('working')\n")
    by_guest = {f.guest: f for f in plan(trace, app)}
    assert by_guest[f"{protocol.APP_DIR}/worker.py"].how == "copy"
    assert by_guest[f"{protocol.APP_DIR}/worker.pyc"].how == "pyc"  # the app folder whole
    assert f"{protocol.APP_DIR}/hello.py" not in by_guest


def test_plan_files_include(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app / ".well-known").mkdir()
    (app / ".well-known" / "security.txt").write_text("contact: x")
    by_guest = {f.guest: f for f in plan(trace, app, include=(".well-known",))}
    page = by_guest[f"{protocol.APP_DIR}/.well-known/security.txt"]
    assert (page.layer, page.how) == ("app", "copy")


def test_the_app_folder_leaves_out_build_files_environments_tests_and_keys(
        fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    for name in ("pyproject.toml", "krait.lock", "requirements.txt", "key.pem", "old.krait",
                 ".env", "tests/test_x.py", "tests/data.json", ".venv/pyvenv.cfg",
                 "venv/pyvenv.cfg", "venv/lib/x.txt", "__pycache__/x.pyc", "data/big.csv",
                 "data/keep.json", "templates/page.html", ".git/config", "dist/app.whl",
                 "node_modules/x/index.js", "app.egg-info/PKG-INFO", "scripts/tool.py"):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("x")
    guests = {f.guest.removeprefix(protocol.APP_DIR + "/")
              for f in plan(trace, app, ignore=("data/*.csv",)) if f.layer == "app"}
    assert guests == {"hello.pyc", "pkg/__init__.pyc", "pkg/util.pyc", "pkg/later.pyc",
                      "static/index.html", "data/keep.json", "templates/page.html",
                      "scripts/tool.pyc"}


def test_links_inside_the_app_stay_links_and_links_out_are_refused(
        fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app / "static" / "home.html").symlink_to("index.html")
    (app / "assets").symlink_to("static")
    (app / "absolute.html").symlink_to(app / "static" / "index.html")
    by_guest = {f.guest.removeprefix(protocol.APP_DIR + "/"): f for f in plan(trace, app)}
    assert (by_guest["static/home.html"].how, by_guest["static/home.html"].host) == (
        "symlink", Path("index.html"))
    assert (by_guest["assets"].how, by_guest["assets"].host) == ("symlink", Path("static"))
    assert by_guest["absolute.html"].host == Path("static/index.html")  # made relative
    secret = app.parent / "secret.txt"
    secret.write_text("the host's")
    (app / "static" / "leak.txt").symlink_to(secret)
    with pytest.raises(BuildError) as info:
        plan(trace, app)
    assert "static/leak.txt" in info.value.message and "outside the app folder" in \
        info.value.message
    assert info.value.hint and 'ignore = ["static/leak.txt"]' in info.value.hint
    # ... and so is a folder linked from outside, and a link named by `include`.
    (app / "static" / "leak.txt").unlink()
    (app / "etc").symlink_to("/etc")
    with pytest.raises(BuildError, match="outside the app folder"):
        plan(trace, app)
    (app / "etc").unlink()
    (app / ".hidden").symlink_to(secret)
    with pytest.raises(BuildError, match="outside the app folder"):
        plan(trace, app, include=(".hidden",))


def test_plan_files_include_outside_app(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    (app.parent / "secret.txt").write_text("no")
    with pytest.raises(BuildError) as info:
        plan(trace, app, include=("../secret.txt",))
    assert "outside the app folder" in info.value.message


def test_plan_files_include_missing(fake: tuple[Trace, Path]) -> None:
    trace, app = fake
    with pytest.raises(BuildError, match="does not exist"):
        plan(trace, app, include=("nope",))


def test_plan_files_module_outside_sys_path(fake: tuple[Trace, Path], tmp_path: Path) -> None:
    trace, app = fake
    stray = tmp_path / "elsewhere" / "stray.py"
    stray.parent.mkdir()
    stray.write_text("")
    modules = {**trace.modules, "stray": stray}
    bad = Trace(**{**trace.__dict__, "modules": modules})
    with pytest.raises(BuildError, match=r"outside the app's sys\.path"):
        plan(bad, app)


def test_a_distribution_goes_in_whole_but_its_tests_and_build_files(
        fake: tuple[Trace, Path], tmp_path: Path) -> None:
    trace, app = fake
    site = tmp_path / "site-packages"
    files = {"web/__init__.py": "", "web/plugins/by_name.py": "",
             "web/templates/admin/login.html": "<form>", "web/tests/test_web.py": "",
             "web/include/web.h": "", "web/__pycache__/x.cpython-311.pyc": "",
             "web/locale/de/LC_MESSAGES/web.po": "msgid", "web/locale/de/LC_MESSAGES/web.mo": "",
             "web/testing/helpers.py": "", "web-1.0.dist-info/entry_points.txt": "[web]\n",
             "web-1.0.dist-info/METADATA": "Name: web\n"}
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    web = Distribution("web", site, site / "web-1.0.dist-info",
                       tuple(site / rel for rel in files), ())
    t = Trace(**{**trace.__dict__, "path": (*trace.path, site),
                 "modules": {**trace.modules, "web": site / "web" / "__init__.py"},
                 "distributions": {"web": web}})
    result = plan_files(t, app, app_files(app), exclude=("web.testing",))
    guests = {f.guest.removeprefix(protocol.PACKAGES_DIR + "/"): f
              for f in result.files if f.layer == "packages"}
    assert set(guests) == {"web/__init__.pyc", "web/plugins/by_name.pyc",
                           "web/templates/admin/login.html",
                           "web/locale/de/LC_MESSAGES/web.mo",
                           "web-1.0.dist-info/entry_points.txt", "web-1.0.dist-info/METADATA"}
    assert set(result.left_out) == {"tests", "development", "bytecode", "translations-sources"}


def test_time_zones_come_when_zoneinfo_does(fake: tuple[Trace, Path], tmp_path: Path) -> None:
    trace, app = fake
    zones = tmp_path / "zoneinfo"
    (zones / "Europe").mkdir(parents=True)
    (zones / "Europe" / "Berlin").write_bytes(b"TZif")
    (zones / "right" / "Europe").mkdir(parents=True)
    (zones / "right" / "Europe" / "Berlin").write_bytes(b"TZif")
    (zones / "posix").symlink_to(".")
    (zones / "localtime").symlink_to("/etc/localtime")
    zoneinfo = trace.stdlib / "zoneinfo.py"
    zoneinfo.write_text("")
    with_zones = Trace(**{**trace.__dict__, "tzpath": (tmp_path / "none", zones)})
    assert not {f.guest for f in plan(with_zones, app)} & {str(zones / "Europe" / "Berlin")}
    t = Trace(**{**with_zones.__dict__, "modules": {**trace.modules, "zoneinfo": zoneinfo}})
    by_guest = {f.guest: f for f in plan(t, app)}
    assert by_guest[str(zones / "Europe" / "Berlin")].how == "copy"
    assert by_guest[str(zones / "posix")].how == "symlink"
    assert str(zones / "right" / "Europe" / "Berlin") not in by_guest
    assert str(zones / "localtime") not in by_guest


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
