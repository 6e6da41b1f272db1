"""The guest runtime ships in every image: standard library and krait.guest only, and
the pure-Python libraries the runtime brings along in its own folder (wsproto, h11)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import krait
import krait.guest
from krait.image.trace import RUNTIME_LIBRARIES

GUEST_DIR = Path(krait.guest.__file__).parent
GUEST_MODULES = sorted(GUEST_DIR.rglob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(Path(krait.__file__).parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, nested ones included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from pkg import sub` may import the submodule pkg.sub.
            if target in ("krait", "krait.guest") or target.startswith("krait.guest."):
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "krait":
        return module == "krait.guest" or module.startswith("krait.guest.")
    return top in sys.stdlib_module_names or top in RUNTIME_LIBRARIES


def test_guest_modules_found() -> None:
    names = {p.name for p in GUEST_MODULES}
    assert {"__init__.py", "protocol.py", "init.py"} <= names


@pytest.mark.parametrize("path", GUEST_MODULES, ids=lambda p: p.name)
def test_guest_imports_only_stdlib_and_itself(path: Path) -> None:
    bad = [(line, mod) for line, mod in imported(path) if not allowed(mod)]
    assert not bad, f"{path.name} imports outside the standard library and krait.guest: {bad}"


def test_the_checker_catches_bad_imports(tmp_path: Path) -> None:
    assert allowed("os.path") and allowed("__future__") and allowed("krait.guest.protocol")
    for mod in ("krait", "krait.config", "krait.vmm.qemu", "zstandard", "click"):
        assert not allowed(mod), mod


def test_krait_init_imports_nothing() -> None:
    path = Path(krait.__file__)
    assert path.name == "__init__.py"
    imports = [n for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports == [], [ast.unparse(n) for n in imports]
