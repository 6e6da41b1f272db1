"""The HTTP gateway (protocol "http") with real clients against fake instances: requests
read whole before they take an instance, balanced per request, WebSockets and streams
holding their instance, metrics and the access log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from krait.fleet.gateway import Gateway
from krait.fleet.metrics import Metrics, MetricsListener
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits

from ._fleet_fakes import FakeClock, FakeDriver, get, run_gateway, until


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a new connection; everything that comes back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_bad_heads_are_answered_by_the_gateway_and_boot_nothing() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert (await exchange(gw.port, b"\x16\x03\x01 not http\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
        assert (await exchange(gw.port, big)).startswith(b"HTTP/1.1 431 ")
        many = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-A: b\r\n" * 30 + b"\r\n"
        assert (await exchange(gw.port, many)).startswith(b"HTTP/1.1 431 ")
        connect_ = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        assert (await exchange(gw.port, connect_)).startswith(b"HTTP/1.1 405 ")
        # A head dripped a byte at a time: 408 once head_timeout has passed since its
        # first byte, however often bytes come.
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)

        async def drip() -> None:
            with contextlib.suppress(ConnectionError):  # closed by the gateway
                for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.02)

        dripping = asyncio.create_task(drip())
        answer = await asyncio.wait_for(reader.read(), 5)
        dripping.cancel()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert driver.booted == [], "a bad or slow request booted an instance"
        assert gw.stats.bad_requests == 5
        assert (await get(gw.port)).startswith(b"HTTP/1.1 200 ")

    run_gateway(test, limits=Limits(max_head=4096, max_headers=20, head_timeout=0.5))


def test_a_keep_alive_connection_is_balanced_per_request_with_curl() -> None:
    """curl's requests on one connection go to whichever instance is free: while
    another client holds t-1, they go to t-2; once it is done, to t-1 again."""

    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        await until(lambda: [v.state for v in gw.views()] == ["running", "running"])
        holder = asyncio.create_task(get(gw.port, path="/sleep/8"))
        await until(lambda: gw.view(gw.instances["t-1"]).connections == 1)
        url = f"http://127.0.0.1:{gw.port}/sleep/1"
        argv = ["curl", "-sS", "--http1.1", "-w", " connects=%{num_connects}\n",
                *[url] * 14]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        lines = out.decode().splitlines()
        assert len(lines) == 14
        assert sum(int(line.rpartition("=")[2]) for line in lines) == 1  # one connection
        ids = [line.split("id=")[1].split()[0] for line in lines]
        assert ids[0] == "t-2" and "t-1" in ids, ids  # not pinned to either
        assert (await holder).startswith(b"HTTP/1.1 200 ")

    run_gateway(test, ScalePolicy(min_instances=2, max_instances=2, idle_seconds=30))


def test_pipelined_requests_and_a_streamed_body_are_answered_in_order() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        two = (b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = await exchange(gw.port, two)
        assert answer.count(b"HTTP/1.1 200 ") == 2
        assert answer.index(b"path=/a") < answer.index(b"path=/b")
        body = b"x" * (300 << 10)  # over body_buffer: sent on as it comes
        post = (b"POST /up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body
        assert b"path=/up" in await exchange(gw.port, post)
        # Ten requests, one connection to the instance (kept between requests).
        for _ in range(10):
            assert (await get(gw.port)).startswith(b"HTTP/1.1 200 ")
        assert driver.instances["t-1"].connections <= 2

    run_gateway(test)


def test_a_websocket_holds_its_instance_while_open_then_lets_it_pause() -> None:
    """A real WebSocket client; while it is open the instance neither pauses nor stops,
    however long it is quiet and whatever the HTTP idle timeout."""

    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        async with connect(f"ws://127.0.0.1:{gw.port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo hello"
            assert gw.sessions == 1
            clock.now += 3600  # far past pause (2 s), idle (30 s) and busy_grace
            await asyncio.sleep(0.5)
            assert driver.paused == [] and driver.stopped == []
            assert gw.view(gw.instances["t-1"]).connections == 1
            await ws.send("still here")
            assert await ws.recv() == "echo still here"
        await until(lambda: gw.sessions == 0)
        clock.now += 10  # past pause_seconds and busy_grace
        await until(lambda: driver.paused == ["t-1"])

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2),
                limits=Limits(idle_timeout=0.2))


def test_a_streamed_answer_holds_its_instance_until_it_ends() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        assert b"data: x" in await reader.readuntil(b"data: x")
        clock.now += 3600
        await asyncio.sleep(0.5)
        assert driver.paused == [] and driver.stopped == []
        driver.stream_open.set()
        await reader.readuntil(b"0\r\n\r\n")  # the chunked end
        writer.close()
        await until(lambda: gw.view(gw.instances["t-1"]).connections == 0)
        clock.now += 10  # past pause_seconds and busy_grace
        await until(lambda: driver.paused == ["t-1"])

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics read by urllib and parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/plain; version=")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_and_count_requests_boots_and_refusals(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()

    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        async with MetricsListener(metrics, "127.0.0.1", 0) as listener:
            for _ in range(3):
                assert (await get(gw.port)).startswith(b"HTTP/1.1 200 ")
            assert (await exchange(gw.port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
            seen = await asyncio.to_thread(scrape, listener.port)
            with pytest.raises(urllib.error.HTTPError, match="404"):
                await asyncio.to_thread(urllib.request.urlopen,
                                        f"http://127.0.0.1:{listener.port}/other")
        route = ("route", "t")
        assert seen["krait_requests_total", (route, ("status", "200"))] == 3
        assert seen["krait_requests_total", (route, ("status", "400"))] == 1
        assert seen["krait_refused_total", (("reason", "malformed"), route)] == 1
        assert seen["krait_request_seconds_count", (route, ("start", "cold"))] == 1
        assert seen["krait_request_seconds_count", (route, ("start", "warm"))] == 2
        assert seen["krait_instance_events_total", (("event", "boots"), route)] == 1
        assert seen["krait_instances", (route, ("state", "running"))] == 1
        assert seen["krait_sessions_open", (route,)] == 0

    with caplog.at_level(logging.INFO, logger="krait.fleet.access"):
        run_gateway(test, metrics=metrics)
    lines = [r.getMessage() for r in caplog.records if r.name == "krait.fleet.access"]
    assert len(lines) == 4
    assert '"GET / HTTP/1.0" 200 ' in lines[0] and lines[0].endswith(" t-1 cold")
    assert lines[1].startswith("127.0.0.1 - - [") and lines[1].endswith(" t-1 warm")
    assert '] "-" 400 0 ' in lines[3]


def test_close_lets_requests_in_flight_finish_and_takes_no_new_ones() -> None:
    async def main() -> None:
        from ._fleet_fakes import FakeDriver, image

        driver = FakeDriver()
        gw = Gateway(driver, image(1), ScalePolicy(idle_seconds=30), "t", boot_timeout=5)
        await gw.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /sleep/5 HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive
        await writer.drain()
        await until(lambda: gw.in_flight() == 1)
        closing = asyncio.create_task(gw.close(drain=5))
        answer = await asyncio.wait_for(reader.read(), 5)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 200 ") and b"path=/sleep/5" in answer
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", gw.port)  # not listening
        await closing
        assert driver.running() == []

    asyncio.run(main())
