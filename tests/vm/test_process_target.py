"""`krait run --target process`: the image's app, interpreter and layers as a process on
this host: the same readiness line, exit status, environment and ports, in well under a
second, and a clear error where it cannot run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from krait.bench.http import first_answer
from krait.vmm.ports import free_port

from .conftest import ctrl_c, krait_cli, krait_running
from .test_errors import rewrite

pytestmark = pytest.mark.vm

JOB = """
    import os, sys

    def main():
        print("ENV=" + os.environ.get("BAKED", "-") + "/" + os.environ.get("GIVEN", "-"))
        print("SITE=" + str(any("site-packages" in p and "/krait" not in p
                                for p in sys.path)))
        return 3
"""


def test_a_job_runs_with_its_settings_and_exit_status(make_app: Callable[..., Path],
                                                      build: Callable[[Path], Path]) -> None:
    image = build(make_app(JOB, extra='env = { BAKED = "baked" }\n'))
    started = time.monotonic()
    proc = krait_cli("run", image, "--target", "process", "--env", "GIVEN=given")
    took = time.monotonic() - started
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "ENV=baked/given" in proc.stdout
    assert "SITE=False" in proc.stdout  # nothing of the host's site-packages
    assert "krait: t ready" in proc.stdout
    print(f"--target process took {took:.2f}s")


def test_a_service_listens_on_the_host_port_and_stops_on_ctrl_c(hello_image: Path) -> None:
    port = free_port()
    with krait_running("run", hello_image, "--target", "process", "-p", f"{port}:8080") as proc:
        status, body = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
        assert status == 200 and b"Hello from a krait unikernel" in body
        out, err = ctrl_c(proc, timeout=30)
    assert proc.returncode == 0, err
    assert f"ready on port {port}" in out


def test_an_interpreter_this_host_does_not_have_is_a_clear_error(hello_image: Path,
                                                                 tmp_path: Path) -> None:
    def elsewhere(raw: bytes) -> bytes:
        manifest = json.loads(raw)
        manifest["interpreter"]["path"] = "/opt/python3.99/bin/python3.99"
        return json.dumps(manifest).encode()

    moved = rewrite(hello_image, tmp_path / "moved.krait", "manifest.json", elsewhere)
    proc = krait_cli("run", moved, "--target", "process")
    assert proc.returncode == 1
    assert "built for /opt/python3.99/bin/python3.99, which this host does not have" in \
        proc.stderr and "Traceback" not in proc.stderr


def test_watch_rebuilds_and_restarts_on_each_change(make_app: Callable[..., Path],
                                                    build: Callable[[Path], Path],
                                                    tmp_path: Path) -> None:
    from krait.bench.edit import APP

    folder = make_app(APP, kind="asgi", entry="app:app", extra="ports = [8080]\n")
    image = build(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with krait_running("run", image, "--target", "process", "-p", f"{port}:8080", "--watch",
                       folder) as proc:
        assert first_answer(url, time.monotonic() + 30, b"v0")[0] == 200
        (folder / "app.py").write_text(APP.replace('"v0"', '"v1"'))
        assert first_answer(url, time.monotonic() + 60, b"v1")[0] == 200
        (folder / "app.py").write_text(APP.replace('"v0"', '"v2') + "\n")  # broken
        time.sleep(3)
        assert first_answer(url, time.monotonic() + 5, b"v1")[0] == 200  # kept running
        (folder / "app.py").write_text(APP.replace('"v0"', '"v3"'))
        assert first_answer(url, time.monotonic() + 60, b"v3")[0] == 200
        _, err = ctrl_c(proc, timeout=30)
    assert proc.returncode == 0, err
    assert err.count("rebuilt and restarted") == 2 and "the rebuild failed" in err, err


def test_the_process_backend_runs_detached_and_behind_serve(
        hello_image: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A backend like the others: `run -d`, `ps`, `logs`, `stop`, `rm` and `serve` do not
    know it is a process (they ask it, by the reference it made)."""
    from .fleet_support import private_state

    with private_state(monkeypatch):
        port = free_port()
        started = krait_cli("run", "-d", "--name", "proc1", "--backend", "process", "-p",
                            f"{port}:8080", hello_image)
        assert started.returncode == 0, started.stderr
        try:
            status, body = first_answer(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
            assert status == 200 and b"Hello" in body
            (listed,) = json.loads(krait_cli("ps", "--json").stdout)
            assert (listed["name"], listed["state"], listed["backend"]) == (
                "proc1", "running", "process")
            assert listed["pid"] is not None and listed["rss_mb"] > 0  # a process of this host
            assert "hello ready on port" in krait_cli("logs", "proc1").stdout
        finally:
            stopped = krait_cli("stop", "proc1")
        assert stopped.returncode == 0, stopped.stderr
        assert krait_cli("rm", "proc1").returncode == 0
        serve_port = free_port()
        with krait_running("serve", hello_image, "--port", serve_port, "--backend",
                           "process", "--idle", "60s") as proc:
            status, body = first_answer(f"http://127.0.0.1:{serve_port}/",
                                        time.monotonic() + 30)
            assert status == 200 and b"Hello" in body
            (listed,) = json.loads(krait_cli("ps", "--json").stdout)
            assert (listed["owner"], listed["backend"]) == ("serve", "process")
            _, err = ctrl_c(proc, timeout=60)
        assert proc.returncode == 0, err
