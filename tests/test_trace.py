"""krait.image.trace: importing a small app in a subprocess and reading the report."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import TraceError
from krait.image.trace import RUNTIME_PATH, Trace, find_interpreter, trace_app

MISSING = "krait_test_no_such_module_4f2a"


def make_app(root: Path, code: str, entry: str = "hello:main", extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "krait.toml").write_text(f'entry = "{entry}"\n{extra}')
    (root / "hello.py").write_text(code)
    return root


def trace(root: Path) -> Trace:
    return trace_app(load_app(root), python=Path(sys.executable))


def test_working_app(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "import json\n\ndef main():\n    return 0\n")
    t = trace(root)
    app_root = root.resolve()
    assert t.modules["hello"] == app_root / "hello.py"
    # Standard library modules it imported, and the guest runtime for its kind.
    assert t.modules["json"].parent.name == "json"
    assert t.modules["json"].is_relative_to(t.stdlib)
    assert "json.decoder" in t.modules
    assert t.modules["krait.guest.init"] == RUNTIME_PATH / "krait" / "guest" / "init.py"
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
    assert info.value.hint is not None
    assert "`modules`" in info.value.hint
    assert MISSING in info.value.hint


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


def test_find_interpreter_prefers_the_app_venv(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "def main():\n    return 0\n")
    app = load_app(root)
    assert find_interpreter(app) == Path(sys.executable)
    venv_python = root / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    assert find_interpreter(load_app(root)) == root.resolve() / ".venv" / "bin" / "python"


def test_missing_name_in_an_installed_module_is_not_called_missing(tmp_path: Path) -> None:
    root = make_app(tmp_path / "app", "from json import no_such_name\n\ndef main():\n"
                    "    return 0\n")
    with pytest.raises(TraceError) as info:
        trace(root)
    assert "no_such_name" in info.value.message
    assert "`json` is not installed" not in info.value.message
