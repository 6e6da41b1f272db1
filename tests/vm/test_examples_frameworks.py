"""Flask (waitress) and FastAPI (uvicorn, pydantic, numpy) apps built from bare copies
(krait installs their locked dependencies), booted once each, answering real requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from krait.image.archive import open_image
from krait.kernel import Kernel

from ._examples import Booted, app_pid, build_example, get_json, request
from .conftest import Boot

pytestmark = pytest.mark.vm


def assert_stops_gracefully(vm: Booted) -> None:
    """krait's stop (SIGTERM in the guest) ends the server cleanly: exit status 0."""
    vm.vm.request_stop()
    result = vm.vm.wait(30)
    assert result is not None and result.exit_status == 0, vm.vm.console_tail()


def test_flask_on_waitress(kernel: Kernel, tmp_path: Path, no_leftover_qemu: None,
                           booted: Boot) -> None:
    image = build_example("flask", kernel, tmp_path)
    manifest = open_image(image).manifest
    assert manifest.settings["server"] == "waitress"
    assert {"flask", "waitress.server", "markupsafe._speedups"} <= set(manifest.modules)
    with booted(image) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200 and body.startswith(b"Hello from Flask 3.11"), body
        assert app_pid(body) > 1  # PID 1's child
        assert get_json(vm.url("/items"), "POST", {"name": "first"}) == (
            201, {"id": 1, "name": "first"})
        assert get_json(vm.url("/items/1")) == (200, {"id": 1, "name": "first"})
        assert get_json(vm.url("/items")) == (200, [{"id": 1, "name": "first"}])
        assert request(vm.url("/items/99"))[0] == 404
        status, headers, body = request(vm.url("/hello/%3Cscript%3E"))
        assert body == b"<p>Hello, &lt;script&gt;!</p>"  # Jinja2 + MarkupSafe escaping
        assert headers["server"] == "krait"  # waitress answered, with our ident
        assert_stops_gracefully(vm)


def test_fastapi_on_uvicorn_with_pydantic_and_numpy(kernel: Kernel, tmp_path: Path,
                                                    no_leftover_qemu: None, booted: Boot) -> None:
    image = build_example("fastapi", kernel, tmp_path)
    img = open_image(image)
    modules = set(img.manifest.modules)
    assert {"uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on",
            "pydantic_core._pydantic_core", "numpy._core._multiarray_umath"} <= modules
    assert not {"uvloop", "httptools"} & modules  # one asyncio loop, pure-Python h11
    with booted(image) as vm:
        status, info = get_json(vm.url("/"))
        assert status == 200 and info["pid"] > 1 and info["numpy"].startswith("2.")
        item = {"name": "widget", "price": 2.5, "tags": ["a", "b"]}
        assert get_json(vm.url("/items"), "POST", item) == (201, {**item, "id": 1})
        assert get_json(vm.url("/items/1")) == (200, {**item, "id": 1})
        # pydantic_core's compiled validator rejects bad input with its own messages.
        status, err = get_json(vm.url("/items"), "POST", {"name": "", "price": -1})
        assert status == 422
        assert {e["type"] for e in err["detail"]} == {"string_too_short", "greater_than"}
        status, stats = get_json(vm.url("/stats"), "POST", {"values": [1, 2, 3, 4]})
        assert status == 200
        assert stats["mean"] == 2.5 and stats["sum"] == 10.0
        assert abs(stats["std"] - 1.118033988749895) < 1e-12
        # A matrix inverse through the OpenBLAS bundled in numpy.libs/.
        status, mm = get_json(vm.url("/matmul/60"))
        assert status == 200 and abs(mm["trace"] - 60.0) < 1e-9
        assert request(vm.url("/items/7"))[0] == 404
        assert_stops_gracefully(vm)
