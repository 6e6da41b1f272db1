"""`krait bench compare`'s cheap variants for real: the process, and a crun container
on a Debian root this test debootstraps into its own cache (about 40 s), serving with
the server a Debian user would run."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from krait.bench.compare import Settings
from krait.bench.compare.base import measure
from krait.bench.compare.container import ContainerVariant
from krait.bench.compare.payload import build_payload
from krait.bench.compare.process import ProcessVariant
from krait.bench.http import first_answer
from krait.config import AppConfig, load_app
from krait.vmm.ports import free_port

from .conftest import ROOT

pytestmark = pytest.mark.vm
SETTINGS = Settings(runs=2, wrk_seconds=1, wrk_connections=2, boot_timeout=60)


@pytest.fixture
def hello(tmp_path: Path) -> tuple[AppConfig, AppConfig]:
    app = load_app(ROOT / "examples" / "hello")
    return app, build_payload(app, tmp_path / "payload")


def test_process_variant_serves_and_is_measured(hello: tuple[AppConfig, AppConfig]) -> None:
    if not shutil.which("wrk"):
        pytest.fail("wrk is not installed (run `make deps`)")
    result = measure(ProcessVariant(*hello, SETTINGS))
    assert result.skipped is None
    assert len(result.boot_s) == 2 and all(0 < s < 60 for s in result.boot_s)
    assert all(pss > 1 for pss in result.host_pss_mb)
    assert result.requests_per_s is not None and result.requests_per_s > 0
    # the stats path saw the app's own port listening (the process shares the host's)
    # (A count the variant could not take is None: that fails too.)
    assert (result.surface["listening_ports"] or 0) >= 1
    assert (result.surface["packages"] or 0) > 0  # the host's dpkg database
    assert result.artifact_bytes is not None and result.artifact_bytes > 1000


def test_container_variant_with_crun(hello: tuple[AppConfig, AppConfig]) -> None:
    for tool in ("crun", "slirp4netns", "debootstrap"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (run `make deps`)")
    result = measure(ContainerVariant(*hello, SETTINGS))
    assert result.skipped is None, result.skipped
    assert len(result.boot_s) == 2
    assert result.guest_used_mb and all(0 < m < 256 for m in result.guest_used_mb)
    assert (result.surface["packages"] or 0) > 50 and (result.surface["shells"] or 0) >= 1
    assert result.requests_per_s is not None and result.requests_per_s > 0


def test_the_container_serves_a_flask_app_with_gunicorn(tmp_path: Path) -> None:
    for tool in ("crun", "slirp4netns", "debootstrap"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (run `make deps`)")
    app = load_app(ROOT / "examples" / "flask")
    variant = ContainerVariant(app, build_payload(app, tmp_path / "payload"), SETTINGS)
    variant.prepare()  # Flask and gunicorn from PyPI into /opt/venv (uv's cache after once)
    port = free_port()
    with variant.started(port):
        status, body = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 60)
        assert status == 200 and body.startswith(b"Hello from Flask 3.11")  # Debian's 3.11
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello/krait", timeout=10) as r:
            assert r.headers["Server"].startswith("gunicorn")
            assert r.read() == b"<p>Hello, krait!</p>"
