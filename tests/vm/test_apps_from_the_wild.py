"""Services written by others, as their frameworks' own tools lay them out, with no line
for krait beyond entry and kind: frameworks that import by name (Django's settings,
gunicorn's class URIs, uvicorn's loops, Pillow's plugins, SQLAlchemy's dialects, pluggy's
entry points), package data (the admin's templates), servers the app starts itself, and
WebSockets. Each is built once per session from a bare folder, with the build's check
(tests/vm/conftest.py `wild_image`), and booted under QEMU."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from krait.image.archive import open_image

from ._examples import app_pid, request
from .conftest import Boot

pytestmark = pytest.mark.vm


async def echo_session(url: str) -> list[object]:
    """A real WebSocket client: text, bytes, a ping, then the server's own close."""
    heard: list[object] = []
    # A cold boot may come first (krait serve): wait for the opening handshake that long.
    async with connect(url, compression=None, open_timeout=120) as ws:
        await ws.send("hello")
        heard.append(await ws.recv())
        await ws.send(b"\x01\x02\x03")
        heard.append(await ws.recv())
        await asyncio.wait_for(await ws.ping(), 10)
        await ws.send("bye")
        try:
            await ws.recv()
        except ConnectionClosed as e:
            heard.append((e.rcvd.code, e.rcvd.reason) if e.rcvd else None)
    return heard


def test_django_project_as_startproject_writes_it(wild_image: Callable[[str], Path],
                                                  no_leftover_qemu: None, booted: Boot) -> None:
    image = wild_image("django_site")
    packages = open_image(image).manifest.dependencies.packages
    assert "django" in packages and "sqlparse" in packages
    with booted(image) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200, body  # ROOT_URLCONF, the app's own views and templates
        assert b"<h1>Hello from Django</h1>" in body
        # The admin: its templates are package data; sessions, CSRF and time zones.
        status, headers, body = request(vm.url("/admin/login/"))
        assert status == 200, body[-2000:]
        assert b'name="csrfmiddlewaretoken"' in body and b"Django administration" in body
        assert "csrftoken=" in headers.get("set-cookie", "")
        status, headers, _ = request(vm.url("/admin/"))
        assert status == 200  # urllib followed the redirect to the login page


def test_uvicorn_run_by_the_app(wild_image: Callable[[str], Path],
                                no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("uvicorn_main")) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200 and body.startswith(b"served by uvicorn "), body
        assert app_pid(body) > 1  # the app's own process: PID 1's child
        # uvicorn's WebSocket protocol, with the websockets of uvicorn[standard] (uvloop
        # and httptools too: picked by uvicorn at run time, by name).
        url = vm.url("/ws", scheme="ws")

        async def chat() -> str:
            async with connect(url, compression=None) as ws:
                await ws.send("hi")
                return str(await ws.recv())

        assert asyncio.run(chat()) == "uvicorn: hi"


def test_gunicorn_master_and_two_workers(wild_image: Callable[[str], Path],
                                         no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("gunicorn_workers")) as vm:
        # Ready once the master listens; it forks its workers one after the other.
        deadline = time.monotonic() + 60
        while True:
            status, _, body = request(vm.url("/"))
            assert status == 200, body
            answer = json.loads(body)
            if len(answer["workers"]) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer["parent"] > 1  # gunicorn's master is the app's process: PID 1's child
        assert len(answer["workers"]) == 2 and answer["worker"] in answer["workers"]
    assert not [line for line in vm.lines if "Control server error" in line
                or "Traceback" in line], vm.lines


def test_pillow_writes_webp_and_jpeg(wild_image: Callable[[str], Path],
                                     no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("pillow_formats")) as vm:
        status, headers, webp = request(vm.url("/webp"))
        assert status == 200, webp
        assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
        assert headers["content-type"] == "image/webp"
        status, _, jpeg = request(vm.url("/jpeg"))
        assert status == 200 and jpeg[:3] == b"\xff\xd8\xff", jpeg[:200]
        assert request(vm.url("/png"))[2][:8] == b"\x89PNG\r\n\x1a\n"


def test_sqlalchemy_engine_made_at_the_first_request(wild_image: Callable[[str], Path],
                                                     no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("sqlalchemy_lazy")) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["items"] == [["cups", 3], ["plates", 5]]
        assert answer["dialect"] == "sqlite+pysqlite"


def test_plugins_found_through_entry_points(wild_image: Callable[[str], Path],
                                            no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("sqlite_plugins")) as vm:
        status, _, body = request(vm.url("/"))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["plugins"] == ["sqlite-utils-dateutil"]
        assert answer["parsed"] == "2026-10-03T15:00:00"


def test_fastapi_websocket_echo(wild_image: Callable[[str], Path],
                                no_leftover_qemu: None, booted: Boot) -> None:
    with booted(wild_image("fastapi_ws")) as vm:
        assert request(vm.url("/"))[0] == 200
        heard = asyncio.run(echo_session(vm.url("/ws", scheme="ws")))
        assert heard == ["echo: hello", b"\x03\x02\x01", (4000, "bye to you")]
