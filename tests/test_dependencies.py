"""Declared dependencies, krait.lock and the build environment (uv against the real index).

These resolve and install real packages (small ones: attrs, six) from the package index
into this session's own uv cache; the bad-input cases use an index that refuses, a
package without a wheel for Linux, and a lock that no longer matches.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from krait.config import load_app
from krait.errors import BuildError, ConfigError
from krait.image.environment import base_interpreter, prepare_python
from krait.image.lock import Lock, LockMode, declared_dependencies, ensure_lock, read_lock

KRAIT = [sys.executable, "-m", "krait.cli"]


def app(root: Path, pyproject: str = "", krait_toml: str = "", requirements: str = "",
        code: str = "def main():\n    return 0\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if pyproject:
        (root / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    if krait_toml:
        (root / "krait.toml").write_text(textwrap.dedent(krait_toml))
    if requirements:
        (root / "requirements.txt").write_text(requirements)
    (root / "app.py").write_text(code)
    return root


PYPROJECT = """\
    [project]
    name = "svc"
    version = "1.0"
    dependencies = {deps}
    [project.optional-dependencies]
    extra = ["six"]
    [tool.krait]
    entry = "app:main"
    {krait}
"""


def pyproject(deps: str = '["attrs>=23"]', krait: str = "") -> str:
    return PYPROJECT.format(deps=deps, krait=krait)


def lock(root: Path, mode: LockMode = LockMode.AUTO) -> Lock | None:
    config = load_app(root)
    return ensure_lock(config, base_interpreter(config), mode)


def kill_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """From now on a package index nothing answers at, and a uv cache with nothing in it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections refused
    monkeypatch.setenv("UV_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-uv-cache"))
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")


# -- where dependencies are declared -------------------------------------------------------

def test_declared_in_pyproject_with_extras(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject(krait='extras = ["extra"]'))
    declared = declared_dependencies(load_app(root))
    assert declared.where == "pyproject.toml [project].dependencies"
    assert (declared.file, declared.requirements, declared.extras) == (
        None, ("attrs>=23", "six"), ("extra",))


def test_declared_in_krait_toml_or_requirements_txt(tmp_path: Path) -> None:
    root = app(tmp_path / "a", krait_toml='entry = "app:main"\ndependencies = ["six"]\n')
    declared = declared_dependencies(load_app(root))
    assert (declared.where, declared.requirements) == ("krait.toml `dependencies`", ("six",))
    root = app(tmp_path / "b", krait_toml='entry = "app:main"\n', requirements="six\n")
    declared = declared_dependencies(load_app(root))
    assert (declared.where, declared.file) == ("requirements.txt", "requirements.txt")
    root = app(tmp_path / "c", krait_toml='entry = "app:main"\n')
    assert declared_dependencies(load_app(root)).empty


def test_an_unknown_extra_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such group"):
        load_app(app(tmp_path, pyproject(krait='extras = ["nope"]')))


def test_editing_other_settings_keeps_the_lock_fresh(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    interpreter = base_interpreter(load_app(root))
    before = declared_dependencies(load_app(root)).digest(interpreter)
    (root / "pyproject.toml").write_text(pyproject(krait='memory = "96M"'))
    assert declared_dependencies(load_app(root)).digest(interpreter) == before


# -- the lock --------------------------------------------------------------------------------

def test_first_build_writes_the_lock_and_later_ones_reuse_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = app(tmp_path, pyproject())
    first = lock(root)
    assert first is not None and re.search(r"^attrs==\S+ \\$", first.text, re.MULTILINE)
    assert "--hash=sha256:" in first.text and first.inputs
    # With the index gone, the lock is reused as it is: nothing is resolved again.
    kill_index(monkeypatch, tmp_path)
    again = lock(root, LockMode.LOCKED)
    assert again is not None and again.text == first.text


def test_adding_a_dependency_keeps_the_other_pins(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    first = lock(root)
    assert first is not None
    # Pin attrs at an older release that still fits: a re-lock must keep it.
    older = re.sub(r"^attrs==\S+", "attrs==23.2.0", first.text, flags=re.MULTILINE)
    first.path.write_text(older)
    (root / "pyproject.toml").write_text(pyproject(deps='["attrs>=23", "six"]'))
    second = lock(root)
    assert second is not None
    assert second.pins["attrs"] == "23.2.0" and "six" in second.pins
    upgraded = lock(root, LockMode.UPGRADE)
    assert upgraded is not None and upgraded.pins["attrs"] != "23.2.0"


def test_locked_refuses_a_lock_out_of_date(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    assert lock(root) is not None
    (root / "pyproject.toml").write_text(pyproject(deps='["attrs>=23", "six"]'))
    with pytest.raises(BuildError) as refused:
        lock(root, LockMode.LOCKED)
    assert "krait.lock is out of date with pyproject.toml [project].dependencies" in \
        refused.value.message
    assert "krait lock" in (refused.value.hint or "")


def test_locked_refuses_a_missing_lock(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no krait\.lock"):
        lock(app(tmp_path, pyproject()), LockMode.LOCKED)


def test_unresolvable_dependencies(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject(deps='["attrs==0.0.1.dev999"]'))
    with pytest.raises(BuildError) as refused:
        lock(root)
    assert "cannot be resolved" in refused.value.message
    assert "attrs" in refused.value.message
    assert read_lock(load_app(root)) is None  # nothing half-written


def test_no_network_and_nothing_cached(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kill_index(monkeypatch, tmp_path)
    root = app(tmp_path, pyproject())
    with pytest.raises(BuildError) as refused:
        lock(root)
    assert "cannot reach the package index" in refused.value.message
    assert "UV_INDEX_URL" in (refused.value.hint or "")


def test_a_dependency_without_a_wheel_for_this_platform(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject(deps='["pywin32>=306"]'))
    with pytest.raises(BuildError) as refused:
        lock(root)
    assert "pywin32 has no wheel for this platform" in refused.value.message


def test_requires_python_that_the_interpreter_does_not_meet(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject().replace('version = "1.0"',
                                             'version = "1.0"\nrequires-python = ">=3.99"'))
    with pytest.raises(BuildError) as refused:
        prepare_python(load_app(root))
    assert "requires Python >=3.99" in refused.value.message
    assert "python" in (refused.value.hint or "")


# -- the environment -------------------------------------------------------------------------

def test_the_environment_has_exactly_the_locked_packages(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    env = prepare_python(load_app(root))
    assert env.managed and env.lock is not None
    probe = ("import importlib.metadata as m, sys; "
             "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))")
    names = subprocess.run([env.python, "-I", "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert names == "['attrs']"  # nothing of krait's (click, rich), nothing of the host's
    again = prepare_python(load_app(root))
    assert again.python == env.python  # cached by interpreter + lock


def test_an_app_venv_is_used_as_it_is(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / ".venv"], check=True)
    env = prepare_python(load_app(root))
    assert not env.managed and env.python == root.resolve() / ".venv" / "bin" / "python"
    assert read_lock(load_app(root)) is None  # the user manages it: no lock written


# -- on the command line ---------------------------------------------------------------------

def test_cli_build_failure_leaves_no_image_and_no_lock(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject(deps='["attrs==0.0.1.dev999"]'))
    proc = subprocess.run([*KRAIT, "build", root], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "error: the app's dependencies cannot be resolved" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(root.glob("*.krait")) and not (root / "krait.lock").exists()


def test_cli_lock_lists_what_it_pinned(tmp_path: Path) -> None:
    root = app(tmp_path, pyproject())
    proc = subprocess.run([*KRAIT, "lock", root], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^  \+ attrs==\S+$", proc.stdout, re.MULTILINE), proc.stdout


def test_messages_are_printed_verbatim(tmp_path: Path) -> None:
    proc = subprocess.run([*KRAIT, "build", tmp_path], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "add a [tool.krait] table to pyproject.toml" in proc.stderr


def test_krait_toml_with_a_tool_krait_table(tmp_path: Path) -> None:
    root = app(tmp_path / "a", krait_toml='[tool.krait]\nentry = "app:main"\nkind = "main"\n')
    assert load_app(root).entry == "app:main"
    root = app(tmp_path / "b", krait_toml='name = "x"\n[tool.krait]\nentry = "app:main"\n')
    with pytest.raises(ConfigError, match="beside top-level settings"):
        load_app(root)
