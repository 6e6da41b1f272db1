"""`krait init`: each template builds and runs unchanged, and its own test passes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from krait.bench.http import first_answer, get
from krait.vmm.booted import booted

from .conftest import krait_cli

pytestmark = pytest.mark.vm

ANSWERS = {"asgi": b'{"hello": "from a krait unikernel"}',
           "wsgi": b'{"hello": "from a krait unikernel"}',
           "website": b"<h1>my-website</h1>"}


@pytest.mark.parametrize("template", ["asgi", "wsgi", "main", "website"])
def test_a_new_app_builds_and_runs_unchanged(template: str, tmp_path: Path,
                                             no_leftover_qemu: None) -> None:
    folder = tmp_path / f"my-{template}"
    made = krait_cli("init", folder, "--template", template)
    assert made.returncode == 0, made.stderr
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=folder, capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout
    built = krait_cli("build", folder, "-q", timeout=300)
    assert built.returncode == 0, built.stderr
    image = Path(built.stdout.strip())
    assert image == folder / f"my-{template}.krait"
    if template == "main":
        ran = krait_cli("run", image)
        assert ran.returncode == 0 and "5 words, the longest is 'unikernel'" in ran.stdout
        return
    with booted(image) as vm:
        status, body = first_answer(vm.url("/"), time.monotonic() + 60)
        assert status == 200 and ANSWERS[template] in body, body
        assert get(vm.url("/nope"))[0] == 404
    again = krait_cli("init", folder, "--template", template)
    assert again.returncode == 1 and "exists already" in again.stderr
