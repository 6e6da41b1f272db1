"""The guest's builtin HTTP server, in-process on loopback, with hostile clients."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from krait.guest import http

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
FAST = http.Limits(max_body=1000, body_budget=3000, max_connections=8, header_timeout=0.5,
                   keep_alive_timeout=0.5, read_timeout=0.5, write_timeout=0.5)


class EchoApp:
    """Answers with the method, path and body length; /poll waits for the client to
    leave and records that it heard of it."""

    def __init__(self) -> None:
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = (await receive())["body"]
        if scope["path"] == "/poll":
            if (await receive())["type"] == "http.disconnect":
                self.disconnects += 1
            return
        if scope["path"] == "/fail":
            raise RuntimeError("the app failed")
        answer = f"{scope['method']} {scope['path']} {len(body)}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def serving(app: Any, limits: http.Limits = FAST, wsgi: bool = False
                  ) -> AsyncIterator[int]:
    port = free_port()
    up = asyncio.Event()
    handler = http.wsgi_handler(app, port) if wsgi else http.asgi_handler(app, port, limits)
    task = asyncio.create_task(http.serve(handler, port, up.set, limits=limits,
                                          host="127.0.0.1"))
    await asyncio.wait_for(up.wait(), 5)
    try:
        yield port
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, close our side, read all the server says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_keep_alive_serves_requests_in_turn_and_head_has_no_body() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            answer = await exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                                    b"HEAD /b HTTP/1.1\r\n\r\n"
                                    b"POST /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            parts = answer.split(b"HTTP/1.1 200 OK")
            assert len(parts) == 4, answer
            assert parts[1].endswith(b"GET /a 0") and parts[3].endswith(b"POST /c 3")
            assert parts[2].endswith(b"\r\n\r\n")  # HEAD: headers only

    run(test)


def test_a_body_over_the_limit_is_413_without_being_read_and_the_server_goes_on() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nContent-Length: 67108864\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 413"), answer
            assert b"100 Continue" not in answer  # it was not asked to send the body
            writer.close()
            # Without Expect, a client sends what it has; it still gets its 413.
            big = await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n"
                                 + b"x" * 200000)
            assert big.startswith(b"HTTP/1.1 413"), big[:100]
            assert (await exchange(port, b"GET / HTTP/1.0\r\n\r\n")).endswith(b"GET / 0")

    run(test)


def test_expect_100_continue_within_the_limit_is_answered_before_the_body() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                         b"Connection: close\r\n\r\n")
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == \
                b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"PUT /x 5")
            writer.close()

    run(test)


def test_chunked_bodies_with_extensions_and_trailers() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            answer = await exchange(port, b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                    b"Connection: close\r\n\r\n"
                                    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n"
                                    b"Trailer-Field: x\r\n\r\n")
            assert answer.endswith(b"POST /c 11"), answer
            over = await exchange(port, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  + b"200\r\n" + b"x" * 512 + b"\r\n" * 1
                                  + b"300\r\n" + b"x" * 768 + b"\r\n0\r\n\r\n")
            assert over.startswith(b"HTTP/1.1 413"), over

    run(test)


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nContent-Length: 3_0\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded: header\r\n\r\n",
])
def test_requests_that_could_mean_two_things_are_400(request_bytes: bytes) -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            answer = await exchange(port, request_bytes)
            assert answer.startswith(b"HTTP/1.1 400"), answer
            assert b"connection: close" in answer

    run(test)


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/2.0\r\n\r\n", b"505"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"431"),
])
def test_unsupported_or_oversized_requests_get_their_status(request_bytes: bytes,
                                                            status: bytes) -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            assert (await exchange(port, request_bytes)).startswith(b"HTTP/1.1 " + status)

    run(test)


def test_slow_headers_get_408_and_idle_keep_alive_connections_are_closed() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: slowloris\r\n")  # and never the end
            answer = await asyncio.wait_for(reader.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"GET / 0"), 5)
            assert first.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed when idle
            writer.close()

    run(test)


def test_an_asgi_app_hears_http_disconnect_when_its_client_leaves() -> None:
    async def test() -> None:
        app = EchoApp()
        async with serving(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /poll HTTP/1.1\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            deadline = asyncio.get_running_loop().time() + 5
            while app.disconnects == 0:
                assert asyncio.get_running_loop().time() < deadline, "no http.disconnect"
                await asyncio.sleep(0.02)

    run(test)


def test_bodies_held_at_once_stay_within_the_budget() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            slow = []
            for _ in range(3):  # 3 x 1000 bytes announced: the whole budget
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\nxx")
                await writer.drain()
                slow.append((reader, writer))
            await asyncio.sleep(0.1)
            answer = await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
                                    + b"y" * 10)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            for reader, writer in slow:  # they never finish: 408, and the budget is back
                assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
                writer.close()
            assert (await exchange(port, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n"
                                   b"Connection: close\r\n\r\n" + b"y" * 10)
                    ).endswith(b"POST / 10")

    run(test)


def test_connections_over_the_cap_get_503() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
            await asyncio.sleep(0.1)
            answer = await exchange(port, b"GET / HTTP/1.1\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503"), answer
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.1)
            assert b"GET / 0" in await exchange(port, b"GET / HTTP/1.0\r\n\r\n")

    run(test)


def test_an_app_that_raises_gives_500_and_the_server_goes_on() -> None:
    async def test() -> None:
        async with serving(EchoApp()) as port:
            assert (await exchange(port, b"GET /fail HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 500")
            assert b"GET /ok 0" in await exchange(port, b"GET /ok HTTP/1.0\r\n\r\n")

    run(test)


class WsgiApp:
    """/slow holds its worker thread for a while; /fail raises; anything else answers
    with the method, path and body at once. Records the threads views ran in."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.threads.add(threading.current_thread().name)
        path = environ["PATH_INFO"]
        if path == "/slow":
            time.sleep(0.5)
        if path == "/fail":
            raise RuntimeError("the view failed")
        body = environ["wsgi.input"].read()
        answer = f"{environ['REQUEST_METHOD']} {path} {body.decode()}".encode()
        start_response("200 OK", [("Content-Length", str(len(answer)))])
        return [answer]


def test_wsgi_views_run_in_a_few_threads_and_a_slow_one_stalls_no_other() -> None:
    async def test() -> None:
        app = WsgiApp()
        async with serving(app, wsgi=True) as port:
            loop = asyncio.get_running_loop()
            slow = [asyncio.create_task(exchange(port, b"GET /slow HTTP/1.0\r\n\r\n"))
                    for _ in range(6)]  # FAST takes 8 connections
            await asyncio.sleep(0.1)
            started = loop.time()
            fast = await exchange(port, b"POST /fast HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            assert fast.startswith(b"HTTP/1.1 200") and fast.endswith(b"POST /fast hi")
            # Queued behind the slow views (threads are few), but not behind all six.
            assert loop.time() - started < 1.5
            for answer in await asyncio.gather(*slow):
                assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"GET /slow ")
        assert 1 < len(app.threads) <= http.WSGI_THREADS, app.threads

    run(test)


def test_a_wsgi_view_that_raises_gives_500_and_keep_alive_goes_on_after_good_ones() -> None:
    async def test() -> None:
        async with serving(WsgiApp(), wsgi=True) as port:
            assert (await exchange(port, b"GET /fail HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 500")
            answer = await exchange(port, b"GET /a HTTP/1.1\r\n\r\n"
                                    b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            assert answer.count(b"HTTP/1.1 200 OK") == 2 and answer.endswith(b"POST /b abc")

    run(test)
