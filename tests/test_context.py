"""krait.image.context: the app folder as the build context."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.errors import BuildError
from krait.image.context import app_files, check_shadowing, import_roots, module_name


def files(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_a_src_layout_puts_src_on_the_path(tmp_path: Path) -> None:
    assert import_roots(files(tmp_path / "flat", "app.py")) == ("",)
    src = files(tmp_path / "layout", "src/greeter/__init__.py", "src/greeter/web.py")
    assert import_roots(src) == ("", "src")
    # A package that happens to be called src is a package.
    assert import_roots(files(tmp_path / "pkg", "src/__init__.py")) == ("",)
    roots = import_roots(src)
    assert module_name("src/greeter/web.py", roots) == "greeter.web"
    assert module_name("src/greeter/__init__.py", roots) == "greeter"
    assert module_name("manage.py", roots) == "manage"
    assert module_name("static/not-a-module.py", roots) is None
    assert [f.rel for f in app_files(src)] == ["src/greeter/__init__.py", "src/greeter/web.py"]


@pytest.mark.parametrize("name", ["types.py", "site.py", "secrets.py", "email/__init__.py",
                                  "src/queue.py"])
def test_a_module_that_shadows_the_standard_library_is_named(tmp_path: Path,
                                                             name: str) -> None:
    root = files(tmp_path, "app.py", name, *(["src/pkg/__init__.py"] if "src" in name else []))
    with pytest.raises(BuildError) as info:
        check_shadowing(app_files(root), import_roots(root))
    assert name in info.value.message and "standard-library module" in info.value.message
    assert info.value.hint and info.value.hint.startswith(f"rename {name}")


def test_modules_that_only_look_like_the_standard_library_are_fine(tmp_path: Path) -> None:
    root = files(tmp_path, "app.py", "mysite/types.py", "mysite/email.py", "typing_extras.py",
                 "static/site.py")
    assert check_shadowing(app_files(root), import_roots(root)) == []
    # test.py shadows a package no served app imports: a note, not an error.
    files(root, "test.py")
    [note] = check_shadowing(app_files(root), import_roots(root))
    assert note.startswith("test.py has the name of the standard library's `test`")


def test_a_dangling_link_is_named(tmp_path: Path) -> None:
    root = files(tmp_path, "app.py")
    (root / "gone.txt").symlink_to("nowhere.txt")
    with pytest.raises(BuildError) as info:
        app_files(root)
    assert info.value.message == "gone.txt is a symbolic link to nowhere.txt, which does not exist"


def test_special_files_are_not_files_of_the_app(tmp_path: Path) -> None:
    import os
    import socket

    root = files(tmp_path, "app.py")
    os.mkfifo(root / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
        assert [f.rel for f in app_files(root)] == ["app.py"]


def test_ignore_leaves_out_files_and_whole_folders(tmp_path: Path) -> None:
    root = files(tmp_path, "app.py", "data/a.csv", "data/b.json", "media/x/y.png")
    kept = [f.rel for f in app_files(root, ignore=("data/*.csv", "media"))]
    assert kept == ["app.py", "data/b.json"]
