"""krait.image.trace: importing a small app in a subprocess and reading the report."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import TraceError
from krait.image.environment import prepare_python
from krait.image.trace import Trace, trace_app

MISSING = "krait_test_no_such_module_4f2a"


def make_app(root: Path, code: str, entry: str = "hello:main", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "krait.toml").write_text(f'entry = "{entry}"\n{extra}')
    (root / "hello.py").write_text(code)
    return root


def trace(root: Path) -> Trace:
    app = load_app(root)
    return trace_app(app, prepare_python(app).python)


def test_working_app(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "import json\n\ndef main():\n    return 0\n")
    t = trace(root)
    app_root = root.resolve()
    assert t.modules["hello"] == app_root / "hello.py"
    # Standard library modules it imported, and the guest runtime for its kind.
    assert t.modules["json"].parent.name == "json"
    assert t.modules["json"].is_relative_to(t.stdlib)
    assert "json.decoder" in t.modules
    assert t.modules["krait.guest.init"] == t.runtime / "krait" / "guest" / "init.py"
    assert t.stdlib == Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert tuple(t.version) == tuple(sys.version_info[:3])
    assert t.python_name == f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert t.executable.is_absolute() and t.executable.exists()
    assert app_root in t.path
    assert all(p.is_absolute() for p in t.modules.values())


def test_asgi_app_also_traces_the_http_runtime(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "async def app(scope, receive, send):\n    pass\n",
                    entry="hello:app", extra='kind = "asgi"\n')
    t = trace(root)
    assert "krait.guest.http" in t.modules
    assert "asyncio" in t.modules


def test_declared_dynamic_modules_are_traced(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "def main():\n    return 0\n",
                    extra='modules = ["csv"]\n')
    t = trace(root)
    assert "csv" in t.modules


def test_missing_module(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", f"import {MISSING}\n\ndef main():\n    return 0\n")
    with pytest.raises(TraceError) as info:
        trace(root)
    assert f"`{MISSING}`" in info.value.message
    assert "`hello`" in info.value.message
    assert "declared dependencies do not provide" in info.value.message
    assert info.value.hint is not None
    assert f"add `{MISSING}` to krait.toml `dependencies`" in info.value.hint


def test_missing_callable(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "def main():\n    return 0\n", entry="hello:nope")
    with pytest.raises(TraceError) as info:
        trace(root)
    assert "`nope`" in info.value.message
    assert info.value.hint is not None
    assert "hello:nope" in info.value.hint


def test_entry_that_is_not_callable(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "main = 42\n")
    with pytest.raises(TraceError, match="no callable `main`"):
        trace(root)


def test_error_at_import_time(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "raise RuntimeError('boom at import')\n")
    with pytest.raises(TraceError) as info:
        trace(root)
    assert "RuntimeError: boom at import" in info.value.message
    assert info.value.hint is not None
    assert "`modules`" not in info.value.hint


def test_exit_at_import_time(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "import sys\nsys.exit(3)\n")
    with pytest.raises(TraceError, match="SystemExit"):
        trace(root)


def test_app_that_prints_at_import(tmp_path: Path) -> None:
    code = ("import sys, os\nprint('hello from import', flush=True)\nprint('buffered')\n"
            "os.write(1, b'raw fd write\\n')\n\ndef main():\n    return 0\n")
    root = make_app(tmp_path / "app", code)
    t = trace(root)
    assert t.modules["hello"] == root.resolve() / "hello.py"


def test_trace_sees_nothing_of_krait_s_own_environment(tmp_path: Path) -> None:
    # click and rich are installed where krait runs; an app that does not declare them
    # cannot import them at build time.
    root = make_app(tmp_path / "app", "import click\n\ndef main():\n    return 0\n")
    with pytest.raises(TraceError, match="the app imports `click`"):
        trace(root)


def test_the_guest_runtime_comes_from_a_folder_of_its_own(tmp_path: Path) -> None:
    t = trace(make_app(tmp_path / "app", "def main():\n    return 0\n"))
    runtime_files = {p.relative_to(t.runtime).as_posix() for p in t.runtime.rglob("*.py")}
    assert "krait/guest/init.py" in runtime_files
    assert not any(f.startswith(("krait/image", "krait/cli", "krait/fleet"))
                   for f in runtime_files)
    assert all(n == "krait" or n.startswith("krait.guest")
               for n in t.modules if n.split(".")[0] == "krait")


def test_lazy_imports_are_found_in_the_sources(tmp_path: Path) -> None:
    code = ("def main():\n    import csv\n    from xml.dom import minidom\n"
            "    import importlib\n    importlib.import_module('email.mime.text')\n")
    t = trace(make_app(tmp_path / "app", code))
    assert {"csv", "xml.dom.minidom"} <= set(t.static)
    assert "email.mime.text" in t.modules  # a literal name: imported at build time
    assert "csv" not in t.modules  # found in the source, never imported


def test_type_checking_imports_and_command_line_tools_are_left_out(tmp_path: Path) -> None:
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tkinter\n"
            "    import xmlrpc.server\ndef main():\n    return 0\n"
            "if __name__ == '__main__':\n    import http.server\n")
    t = trace(make_app(tmp_path / "app", code))
    assert not {"xmlrpc.server", "http.server", "tkinter"} & (set(t.static) | set(t.modules))


def test_a_fallback_import_counts_only_when_the_first_choice_is_missing(
        tmp_path: Path) -> None:
    code = ("def main():\n    try:\n        import json\n    except ImportError:\n"
            "        import wave\n    try:\n        import krait_no_such_module\n"
            "    except ImportError:\n        import colorsys\n    return 0\n")
    t = trace(make_app(tmp_path / "app", code))
    assert "wave" not in t.static  # json is there: the fallback never runs
    assert "colorsys" in t.static


def test_codecs_looked_up_by_name_are_in(tmp_path: Path) -> None:
    t = trace(make_app(tmp_path / "app", "def main():\n    return 0\n"))
    assert {"encodings.cp1252", "encodings.utf_16", "encodings.idna"} <= set(t.static)
    assert "encodings.shift_jis" not in t.static  # CJK: 2 MB, only when imported
    # What they import comes too: socket.getaddrinfo("localhost", ...) needs the idna
    # codec, which imports stringprep.
    assert "stringprep" in t.static


def test_a_built_import_name_takes_the_modules_it_can_name(tmp_path: Path) -> None:
    code = ("import importlib\ndef main(kind='json'):\n"
            "    return importlib.import_module(f'encodings.utf_{kind}')\n")
    t = trace(make_app(tmp_path / "app", code))
    assert {"encodings.utf_8", "encodings.utf_16", "encodings.utf_32"} <= {
        *t.static, *t.modules}


def test_missing_name_in_an_installed_module_is_not_called_missing(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "from json import no_such_name\n\ndef main():\n"
                    "    return 0\n")
    with pytest.raises(TraceError) as info:
        trace(root)
    assert "no_such_name" in info.value.message
    assert "`json` is not installed" not in info.value.message
