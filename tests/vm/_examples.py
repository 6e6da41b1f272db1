"""Helpers for the example apps' VM tests: their venvs, images and booted VMs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krait.vmm.launch import RunOptions, prepare
from krait.vmm.options import PortForward
from krait.vmm.qemu import QemuBackend, QemuVm, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# Debian's interpreter, as the examples' README says; fall back to any python3.11.
PYTHON = "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else "python3.11"


def ensure_venv(example: str) -> Path:
    """examples/NAME/.venv with its requirements, created once (a stamp holds the hash)."""
    folder = EXAMPLES / example
    requirements = folder / "requirements.txt"
    venv = folder / ".venv"
    stamp = venv / ".krait-requirements"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and (venv / "bin" / "python").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([PYTHON, "-m", "venv", venv], check=True, timeout=300)
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", requirements], check=True, timeout=900)
    stamp.write_text(want)
    return venv


@dataclass
class Booted:
    vm: QemuVm
    port: int  # host port forwarded to the app's first port
    ports: dict[int, int]  # guest port -> host port

    def url(self, path: str = "/", guest_port: int | None = None) -> str:
        port = self.ports[guest_port] if guest_port else self.port
        return f"http://127.0.0.1:{port}{path}"


@contextlib.contextmanager
def booted(image: Path, guest_ports: tuple[int, ...] = (8080,), env: dict[str, str] | None = None,
           ready_timeout: float = 120) -> Iterator[Booted]:
    """Boot ``image`` with each guest port forwarded; always stopped at the end."""
    ports = {g: free_port() for g in guest_ports}
    _, spec = prepare(image, RunOptions(ports=tuple(PortForward(h, g) for g, h in ports.items()),
                                        env=env or {}))
    vm = QemuBackend().start(spec)
    try:
        assert vm.wait_ready(ready_timeout), "the app never said ready:\n" + vm.console_tail()
        yield Booted(vm, ports[guest_ports[0]], ports)
    except BaseException:
        print("--- guest console ---\n" + vm.console_tail())
        raise
    finally:
        vm.request_stop()
        if vm.wait(30) is None:
            vm.kill()
            vm.wait()


def request(url: str, method: str = "GET", data: Any = None, timeout: float = 30,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body); HTTP errors are answers too."""
    body = None
    hdrs = dict(headers or {})
    if data is not None:
        body = json.dumps(data).encode()
        hdrs.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def get_json(url: str, method: str = "GET", data: Any = None) -> tuple[int, Any]:
    status, _, body = request(url, method, data)
    return status, json.loads(body) if body else None
