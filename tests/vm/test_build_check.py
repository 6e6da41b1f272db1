"""`krait build` proves the image serves: it runs it once as a process (its own
interpreter, layers and standard library) and asks the app's check requests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import BuildError
from krait.image.archive import open_image
from krait.kernel import Kernel
from krait.vmm.check import build_checked, check_image

from .conftest import krait_cli

pytestmark = pytest.mark.vm

WSGI = """
    import importlib

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/broken":
            raise RuntimeError("this view is broken")
        if path == "/colour":
            # A module named by a string built at run time: no scan can see it.
            colours = importlib.import_module("".join(["colo", "rsys"]))
            body = repr(colours.rgb_to_hsv(1, 0, 0)).encode()
        else:
            body = environ["REQUEST_METHOD"].encode() + b" " + path.encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
"""


def test_a_check_that_fails_keeps_the_image_from_before(make_app: Callable[..., Path],
                                                       kernel: Kernel) -> None:
    folder = make_app(WSGI, kind="wsgi", entry="app:app", extra='check = ["/", "/broken"]\n')
    before = folder / "t.krait"
    before.write_bytes(b"the image from before")
    with pytest.raises(BuildError) as info:
        build_checked(load_app(folder), kernel)
    message = info.value.message
    assert "the image does not serve: GET /broken: answered 500" in message
    assert "RuntimeError: this view is broken" in message  # the app's own output
    assert "--no-check" in (info.value.hint or "")
    assert before.read_bytes() == b"the image from before"
    assert sorted(p.name for p in folder.iterdir()) == ["app.py", "krait.toml", "t.krait"]


def test_modules_the_check_needed_are_added(make_app: Callable[..., Path],
                                           kernel: Kernel) -> None:
    folder = make_app(WSGI, kind="wsgi", entry="app:app",
                      extra='check = ["/", "POST /x", "/colour"]\n')
    result = build_checked(load_app(folder), kernel)
    assert "colorsys" in open_image(result.path).manifest.modules
    assert "added colorsys to the image: the check needed them" in result.notes
    assert result.notes[-1].startswith("checked as a process in ")
    assert "GET / → 200, POST /x → 200, GET /colour → 200" in result.notes[-1]


def test_a_main_app_is_checked_by_listening(make_app: Callable[..., Path],
                                           kernel: Kernel) -> None:
    crashes = make_app("""
        def main():
            raise SystemExit("no configuration found")
    """, extra="ports = [18765]\n")
    with pytest.raises(BuildError) as info:
        build_checked(load_app(crashes), kernel)
    assert "no configuration found" in info.value.message


def test_a_src_layout_builds_and_serves(tmp_path: Path, kernel: Kernel) -> None:
    folder = tmp_path / "greeter"
    (folder / "src" / "greeter" / "words").mkdir(parents=True)
    (folder / "src" / "greeter" / "__init__.py").write_text("")
    (folder / "src" / "greeter" / "words" / "hello.txt").write_text("hello from src\n")
    (folder / "src" / "greeter" / "web.py").write_text(textwrap.dedent("""
        from importlib.resources import files

        def app(environ, start_response):
            start_response("200 OK", [])
            return [files("greeter.words").joinpath("hello.txt").read_bytes()]
    """))
    (folder / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "greeter"
        version = "1.0"
        [tool.krait]
        entry = "greeter.web:app"
        kind = "wsgi"
    """))
    result = build_checked(load_app(folder), kernel)
    assert result.notes[-1].endswith("GET / → 200")


def test_no_check_and_an_empty_check(make_app: Callable[..., Path]) -> None:
    folder = make_app(WSGI, kind="wsgi", entry="app:app", extra="check = []\n")
    built = krait_cli("build", folder, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "not checked: the app declares no check requests" in built.stdout
    assert check_image(folder / "t.krait").skipped
    (folder / "krait.toml").write_text(
        'name = "t"\nentry = "app:app"\nkind = "wsgi"\ncheck = ["/broken"]\n')
    assert krait_cli("build", folder, timeout=300).returncode == 1
    built = krait_cli("build", folder, "--no-check", timeout=300)
    assert built.returncode == 0 and "not checked (--no-check)" in built.stdout
