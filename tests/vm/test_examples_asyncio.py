"""An aiohttp app (compiled extensions from its venv) and a plain asyncio server."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.image.archive import open_image
from krait.kernel import Kernel

from ._examples import app_pid, build_example, get_json, request
from .conftest import Boot

pytestmark = pytest.mark.vm


def test_aiohttp(kernel: Kernel, tmp_path: Path, no_leftover_qemu: None, booted: Boot) -> None:
    image = build_example("aiohttp", kernel, tmp_path)
    modules = set(open_image(image).manifest.modules)
    assert {"aiohttp._http_parser", "multidict._multidict", "yarl._quoting_c"} <= modules
    with booted(image) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200 and body.startswith(b"Hello from aiohttp (pid "), body
        assert app_pid(body) > 1  # PID 1's child
        assert get_json(vm.url("/count/a"), "POST") == (200, {"name": "a", "count": 1})
        assert get_json(vm.url("/count/a"), "POST") == (200, {"name": "a", "count": 2})
        assert get_json(vm.url("/query?x=1&y=%C3%A9&x=2")) == (
            200, {"x": ["1", "2"], "y": ["é"]})
        assert request(vm.url("/missing"))[0] == 404
        vm.vm.request_stop()
        result = vm.vm.wait(30)
        assert result is not None and result.exit_status == 0, vm.vm.console_tail()


def test_plain_asyncio_server(kernel: Kernel, tmp_path: Path, no_leftover_qemu: None,
                              booted: Boot) -> None:
    image = build_example("asyncio", kernel, tmp_path)
    with booted(image) as vm:
        assert request(vm.url("/k1"))[0] == 404
        assert request(vm.url("/k1"), "PUT", "value one")[0] == 201
        status, _, body = request(vm.url("/k1"))
        assert (status, body) == (200, b'"value one"')
        status, listing = get_json(vm.url("/"))
        assert listing["keys"] == ["k1"] and listing["pid"] > 1  # PID 1's child
