"""Layers only point down. krait's packages, from the bottom:

    guest                     the code inside the VM (standard library only: its own test)
    errors, paths, run, ...   krait's top-level modules: what every layer uses
    config, kernel            an app's settings; the kernel
    image                     building and reading images
    vmm                       backends and the VMs they run (and the build's check)
    fleet                     instances, supervisors, serve's gateway
    bench                     measurements of all of the above
    cli                       the command line: nothing imports it

A module may import its own layer and those below it, never one above: an arrow that
points up is how a cycle comes in (config once imported vmm to list backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

import krait

from .test_guest_boundary import imported, module_name

SRC = Path(krait.__file__).parent
RANK = {"guest": 0, "config": 2, "kernel": 2, "image": 3, "vmm": 4, "fleet": 5, "bench": 6,
        "cli": 7}
TOP_LEVEL = 1  # krait/errors.py, paths.py, run.py ...


def rank_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "krait":
        return None
    if len(parts) == 1:
        return TOP_LEVEL
    if parts[1] in RANK:
        return RANK[parts[1]]
    return TOP_LEVEL if (SRC / f"{parts[1]}.py").exists() else None


MODULES = sorted(p for p in SRC.rglob("*.py") if "templates" not in p.parts)


def test_every_module_has_a_layer() -> None:
    assert {rank_of(module_name(p)) for p in MODULES} <= {0, *RANK.values(), TOP_LEVEL}
    assert all(rank_of(module_name(p)) is not None for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    mine = rank_of(module_name(path))
    assert mine is not None
    up = [f"{path.relative_to(SRC)}:{line} imports {target}"
          for line, target in imported(path)
          if (theirs := rank_of(target)) is not None and theirs > mine]
    assert not up, "\n".join(up)


def test_the_rule_catches_an_arrow_up(tmp_path: Path) -> None:
    # What config once did: the test must be able to fail.
    assert rank_of("krait.vmm.backends") > rank_of("krait.config.settings")  # type: ignore[operator]
    assert rank_of("krait.cli") == RANK["cli"] and rank_of("krait.errors") == TOP_LEVEL
