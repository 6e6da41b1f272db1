"""No VM outlives the krait that started it: `krait run` and `krait serve` killed with
SIGKILL (no clean-up of their own runs) leave no QEMU running."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import psutil
import pytest

from krait.vmm.ports import free_port

from .conftest import KRAIT
from .fleet_support import private_state, wait_for

pytestmark = pytest.mark.vm


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_killed_krait_leaves_no_vm_running(command: str, hello_image: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    argv = {"run": ["run", hello_image, "-p", f"{port}:8080"],
            "serve": ["serve", hello_image, "--port", port, "--name", f"t{port}",
                      "--min", "1", "--no-prewarm"]}[command]
    with private_state(monkeypatch) as state:
        proc = subprocess.Popen([*KRAIT, *map(str, argv)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "KRAIT_CACHE": str(state / "cache")})
        try:
            wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), 120, "an answer")
            qemus = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if p.name().startswith("qemu-system")]
            assert qemus, "no QEMU answered"
        finally:
            proc.kill()
            proc.wait()
        _gone, alive = psutil.wait_procs(qemus, timeout=10)
        assert not alive, f"QEMU outlived `krait {command}` (killed): {alive}"
