"""A standard-library module imported by a name no scan can see is named in the guest,
with how to add it, when its absence ends the app; an app that handles the ImportError
itself hears nothing from krait."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import krait_cli

pytestmark = pytest.mark.vm


def test_guest_names_a_module_the_build_missed_only_when_it_hurts(
        make_app: Callable[..., Path], build: Callable[[Path], Path],
        no_leftover_qemu: None) -> None:
    image = build(make_app("""
        import importlib

        def main():
            name = "".join(["colo", "rsys"])  # computed at run time: no scan can see it
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                print("HANDLED", e.name, flush=True)
            importlib.import_module(name)  # and now nobody catches it
            return 0
    """))
    proc = krait_cli("run", image)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "HANDLED colorsys" in out
    hints = [line for line in out.splitlines() if "is not in the image" in line]
    assert hints == ['krait: module `colorsys` is not in the image: the build did not see it '
                     'used. Add it to [tool.krait] modules = ["colorsys"] (or "colorsys.*") '
                     'and rebuild.'], out
    assert out.index("HANDLED colorsys") < out.index("Traceback") < out.index(hints[0])
