"""`krait bench compare`: how the container and the Debian VM serve the app (gunicorn for
WSGI, uvicorn for ASGI, from a venv of the app's lock), and the systemd unit that
starts it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from krait.bench.compare import VariantSkipped, debian
from krait.bench.compare.gpvm import configure_root, systemd_word, unit
from krait.bench.compare.payload import WRAPPER, build_payload
from krait.config import load_app
from krait.image.lock import read_lock

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_a_wsgi_app_gets_gunicorn_with_its_documented_workers() -> None:
    flask = load_app(EXAMPLES / "flask")
    assert debian.server_of(flask) == "gunicorn"
    argv = debian.server_argv(flask, 8080, cores=2)
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "gunicorn"]
    assert argv[argv.index("--workers") + 1] == "5"  # 2 x 2 cores + 1
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:8080"
    assert argv[argv.index("--chdir") + 1] == debian.APP_DIR
    assert argv[-1] == f"{WRAPPER}:app"  # the stats wrapper, not the bare app
    assert debian.server_argv(flask, 8080, cores=1)[argv.index("--workers") + 1] == "3"


def test_an_asgi_app_gets_uvicorn_without_access_lines() -> None:
    argv = debian.server_argv(load_app(EXAMPLES / "fastapi"), 9000, cores=2)
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "uvicorn"]
    assert argv[argv.index("--port") + 1] == "9000" and "--workers" not in argv
    assert "--no-access-log" in argv and argv[-1] == f"{WRAPPER}:app"


def test_the_server_is_the_locked_one_when_the_app_locks_it() -> None:
    fastapi = read_lock(load_app(EXAMPLES / "fastapi"))
    assert fastapi is not None
    assert debian.server_requirement("uvicorn", fastapi) == f"uvicorn=={fastapi.pins['uvicorn']}"
    flask = read_lock(load_app(EXAMPLES / "flask"))
    assert debian.server_requirement("gunicorn", flask) == debian.SERVER_PINS["gunicorn"]
    assert debian.server_requirement("uvicorn", None) == debian.SERVER_PINS["uvicorn"]


def test_systemd_words_read_back_as_written() -> None:
    # systemd splits and unquotes as a shell does for these characters
    for word in ("plain", "two words", 'a "quote"', "back\\slash"):
        assert shlex.split(systemd_word(word)) == [word]
    assert systemd_word("100%") == "100%%"  # a specifier otherwise
    assert systemd_word("$HOME", command=True) == "$$HOME"
    assert systemd_word("$HOME") == "$HOME"  # Environment= expands no variables


def test_the_unit_starts_the_server_in_the_app_folder_with_its_env() -> None:
    hello = load_app(EXAMPLES / "hello")
    text = unit(debian.server_argv(hello, 8080, 1), hello.env)
    assert f"WorkingDirectory={debian.APP_DIR}" in text
    greeting = hello.env["GREETING"]
    assert f'Environment="GREETING={greeting}"' in text
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_line.removeprefix("ExecStart=")) == debian.server_argv(hello,
                                                                                   8080, 1)


def test_configure_root_installs_app_venv_and_unit(tmp_path: Path) -> None:
    hello = load_app(EXAMPLES / "hello")
    payload = build_payload(hello, tmp_path / "payload").root
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(debian.DEBIAN_PYTHON)
    (venv / ".ready").touch()
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    with pytest.raises(VariantSkipped):  # a root without Debian's interpreter
        configure_root(root, payload, venv, "[Service]\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3.11").touch()
    for _ in range(2):  # idempotent: the root is cached
        configure_root(root, payload, venv, "[Service]\n")
    assert (root / "etc/systemd/system/krait-app.service").read_text() == "[Service]\n"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert {p.name for p in wants.iterdir()} == {"krait-app.service",
                                                 "systemd-networkd.service"}
    assert (root / "opt/app/hello.py").is_file()
    linked = root / "opt/venv/bin/python"
    assert linked.is_symlink() and Path(linked.readlink()) == debian.DEBIAN_PYTHON
    assert not (root / "opt/venv/.ready").exists()  # the cache's mark stays in the cache
