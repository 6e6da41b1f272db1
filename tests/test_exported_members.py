"""Public packages list what they export, and the list is kept in order."""

from __future__ import annotations

import importlib
import re
from types import ModuleType

import pytest

PACKAGES = ["krait.config", "krait.kernel"]


def isort_key(name: str) -> tuple[int, list[object]]:
    """The order ruff's RUF022 keeps ``__all__`` in (isort style): SCREAMING_CASE first,
    then CamelCase, then everything else, each group in natural order."""
    if name.isupper() or (name.upper() == name and any(c.isalpha() for c in name)):
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return group, natural


@pytest.fixture(params=PACKAGES)
def package(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def test_all_names_exist(package: ModuleType) -> None:
    assert package.__all__, package.__name__
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, f"{package.__name__}.__all__ lists missing names: {missing}"


def test_all_is_sorted(package: ModuleType) -> None:
    names = list(package.__all__)
    assert names == sorted(names, key=isort_key)


def test_all_has_no_duplicates(package: ModuleType) -> None:
    assert len(set(package.__all__)) == len(package.__all__)


def test_star_import_gives_all(package: ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(package.__all__)


def test_isort_key() -> None:
    assert sorted(["load_app", "Setting", "KINDS", "AppConfig", "SETTINGS"], key=isort_key) == [
        "KINDS", "SETTINGS", "AppConfig", "Setting", "load_app"]
    assert sorted(["f10", "f2"], key=isort_key) == ["f2", "f10"]
