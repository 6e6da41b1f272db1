"""A dynamic import the trace could not see is named in the guest, with how to add it."""

from __future__ import annotations

import pytest

from .conftest import krait_cli

pytestmark = pytest.mark.vm


def test_guest_names_a_module_the_trace_missed(make_app, build, no_leftover_qemu) -> None:
    image = build(make_app("""
        import email
        import importlib

        def main():
            name = "email.mime" + ".text"  # computed at run time: no trace can see it
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                print("MISSING", e.name)
                return 4
            return 0
    """))
    proc = krait_cli("run", image)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "MISSING email.mime" in proc.stdout
    assert "krait: module `email.mime` is not in the image" in proc.stdout
    assert 'modules = ["email.mime"]' in proc.stdout
