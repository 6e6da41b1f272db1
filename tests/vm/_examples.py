"""Helpers for the example apps' VM tests: bare copies, images and booted VMs."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from krait.config import load_app
from krait.image.build import build_image
from krait.kernel import Kernel
from krait.vmm.booted import Booted, booted

__all__ = ["EXAMPLES", "TEST_APPS", "Booted", "app_pid", "bare_copy", "booted",
           "build_example", "get_json", "request"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TEST_APPS = ROOT / "tests" / "apps"


def bare_copy(folder: Path, dest: Path) -> Path:
    """``folder`` as a new user would arrive with it: the source, its pyproject.toml or
    krait.toml and (for the examples) the committed krait.lock; nothing built."""
    target = dest / folder.name
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(
        ".venv", "venv", "*.krait", "__pycache__", ".krait-tls"))
    return target


def build_example(name: str, kernel: Kernel, tmp_path: Path) -> Path:
    """Build examples/NAME from a bare copy (krait installs what it declares)."""
    folder = bare_copy(EXAMPLES / name, tmp_path)
    return build_image(load_app(folder), kernel, tmp_path / f"{name}.krait").path


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


def app_pid(body: bytes) -> int:
    """The pid an example app puts in its answer ("pid 42)", "in process 42"). Never 1:
    PID 1 is krait's runtime, which forks the app and outlives it."""
    found = re.search(rb"pid (\d+)\)|in process (\d+)", body)
    assert found, body
    return int(found.group(1) or found.group(2))


def get_json(url: str, method: str = "GET", data: Any = None) -> tuple[int, Any]:
    status, _, body = request(url, method, data)
    return status, json.loads(body) if body else None
