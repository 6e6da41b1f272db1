"""The gateway's I/O with a fake driver (tests/_fleet_fakes.py): what holds for both
protocols, HTTP (requests read by the gateway) and TCP (bytes both ways)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from krait.errors import ConfigError
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits

from ._fleet_fakes import FakeClock, FakeDriver, get, image, ok, run_gateway, until

PROTOCOLS = pytest.mark.parametrize("protocol", ["http", "tcp"])


@PROTOCOLS
def test_concurrent_cold_start_boots_exactly_once(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        answers = await asyncio.gather(*(get(gw.port) for _ in range(20)))
        assert all(ok(a) for a in answers), answers
        assert len(driver.booted) == 1
        assert gw.stats.boots == 1

    run_gateway(test, ScalePolicy(max_instances=4, per_instance=100), boot_delay=0.3,
                protocol=protocol)


@PROTOCOLS
def test_scale_to_zero_after_idle_then_boot_again(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert ok(await get(gw.port))
        clock.now += 29
        await asyncio.sleep(0.5)
        assert driver.stopped == []
        clock.now += 2
        await until(lambda: driver.stopped == ["t-1"])
        assert gw.instances == {}
        assert b"id=t-2" in await get(gw.port)  # the next connection boots a new one

    run_gateway(test, protocol=protocol)


@PROTOCOLS
def test_scale_out_under_load_up_to_max_and_spread(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        driver.hang = True
        first = [asyncio.create_task(get(gw.port)) for _ in range(3)]
        await until(lambda: len(driver.booted) == 3 and all(
            i.state == "running" for i in gw.instances.values()))
        await asyncio.sleep(0.3)
        assert len(driver.booted) == 3  # --max
        later = [asyncio.create_task(get(gw.port)) for _ in range(4)]
        await until(lambda: sum(v.connections for v in gw.views()) == 7)
        driver.hang = False
        answers = await asyncio.gather(*first, *later)
        assert all(ok(a) for a in answers)
        ids = [a.split(b"id=")[1] for a in answers]
        assert ids[:3] == [b"t-1"] * 3  # held through the cold start: the first instance
        assert sorted(ids[3:]) == [b"t-2", b"t-2", b"t-3", b"t-3"]  # spread, fewest first

    run_gateway(test, ScalePolicy(max_instances=3, per_instance=1), protocol=protocol)


@PROTOCOLS
def test_boot_failure_answers_503_quickly_and_logs_the_reason(
        caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        driver.fail = "the guest kernel panicked: VFS: Unable to mount root"
        answers = await asyncio.gather(*(get(gw.port) for _ in range(3)))
        for a in answers:
            assert a.startswith(b"HTTP/1.1 503"), a
            # The client learns that it failed; the console's words go to the log only.
            assert b"failed to start" in a and b"Unable to mount root" not in a
        assert "Unable to mount root" in caplog.text
        assert len(driver.booted) == 1
        # Within the back-off: answered at once, no new boot.
        assert (await get(gw.port, timeout=1)).startswith(b"HTTP/1.1 503")
        assert len(driver.booted) == 1
        clock.now += 10
        driver.fail = None
        assert ok(await get(gw.port))
        assert len(driver.booted) == 2

    run_gateway(test, protocol=protocol)


@PROTOCOLS
def test_instance_dies_mid_request_gives_502_and_next_request_boots(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert ok(await get(gw.port))
        driver.hang = True
        pending = asyncio.create_task(get(gw.port))
        await until(lambda: gw.view(gw.instances["t-1"]).connections == 1)
        driver.kill("t-1")
        answer = await pending
        assert answer.startswith(b"HTTP/1.1 502"), answer
        driver.hang = False
        assert b"id=t-2" in await get(gw.port)
        assert gw.stats.deaths == 1

    run_gateway(test, protocol=protocol)


@PROTOCOLS
def test_replace_under_continuous_requests_has_no_failures(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        results: list[bytes] = []
        running = True

        async def client() -> None:
            while running:
                results.append(await get(gw.port))

        clients = [asyncio.create_task(client()) for _ in range(4)]
        await until(lambda: len(results) > 20)
        gw.replace(image(2))
        await until(lambda: driver.stopped == ["t-1"])
        count = len(results)
        await until(lambda: len(results) > count + 20)
        running = False
        await asyncio.gather(*clients)
        assert all(ok(r) for r in results)
        generations = [r.split(b"gen=")[1].split()[0] for r in results]
        switch = generations.index(b"2")
        assert set(generations[:switch]) == {b"1"}
        assert generations[-1] == b"2"
        assert [gen for _, gen in driver.booted] == [1, 2]

    run_gateway(test, boot_delay=0.2, protocol=protocol)


def test_port_taken_is_a_clear_error() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            gw = Gateway(FakeDriver(), image(), ScalePolicy(), "t", port=s.getsockname()[1])
            with pytest.raises(ConfigError, match="cannot listen"):
                await gw.start()

    asyncio.run(main())


@PROTOCOLS
def test_close_stops_booting_and_ready_instances(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert ok(await get(gw.port))
        assert driver.running() == ["t-1"]

    run_gateway(test, protocol=protocol)  # run_gateway asserts nothing runs after close()


@PROTOCOLS
def test_an_idle_instance_is_paused_then_resumed_by_the_next_connection(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert ok(await get(gw.port))
        clock.now += 3  # past pause_seconds, far from idle_seconds
        await until(lambda: driver.paused == ["t-1"])
        assert gw.stats.pauses == 1 and driver.stopped == []
        answer = await get(gw.port)
        assert ok(answer) and b"id=t-1" in answer
        assert driver.resumed == ["t-1"] and gw.stats.resumes == 1
        assert len(driver.booted) == 1  # resumed, not booted
        clock.now += 31  # and after idle_seconds, paused or not, it is stopped
        await until(lambda: driver.stopped == ["t-1"])

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2), protocol=protocol)


@PROTOCOLS
def test_concurrent_connections_resume_a_paused_instance_once(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        await get(gw.port)
        clock.now += 3
        await until(lambda: driver.paused == ["t-1"])
        answers = await asyncio.gather(*(get(gw.port) for _ in range(10)))
        assert all(ok(a) for a in answers)
        assert driver.resumed == ["t-1"]

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2), protocol=protocol)


async def hold_open(port: int, send: bytes = b"") -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


@PROTOCOLS
def test_a_client_that_sends_nothing_boots_nothing_and_is_closed(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        silent = [await hold_open(gw.port) for _ in range(50)]
        for reader, _ in silent:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
        assert driver.booted == [] and gw.stats.timed_out == 50
        assert gw.pool.connections == {}
        assert ok(await get(gw.port))

    run_gateway(test, limits=Limits(first_byte_timeout=0.3), protocol=protocol)


@PROTOCOLS
def test_connections_over_a_clients_cap_get_503_and_others_are_served(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        held = [await hold_open(gw.port) for _ in range(3)]
        await until(lambda: len(gw.pool.connections) == 3)
        answer = await get(gw.port)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        assert gw.stats.refused == 1 and driver.booted == []
        for _, writer in held:
            writer.close()
        await until(lambda: not gw.pool.connections)
        assert ok(await get(gw.port))

    run_gateway(test, limits=Limits(max_per_client=3), protocol=protocol)


def test_open_keep_alive_connections_do_not_keep_an_instance_from_scaling_to_zero() -> None:
    """TCP: a connection stays on its instance; once quiet it does not count."""

    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        idle = []
        for _ in range(5):
            reader, writer = await hold_open(gw.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert ok(await reader.readuntil(b"id=t-1"))
            idle.append((reader, writer))
        assert gw.view(gw.instances["t-1"]).connections == 5  # just answered: busy
        clock.now += 6  # past busy_grace: open, silent connections do not count
        assert gw.view(gw.instances["t-1"]).connections == 0
        clock.now += 30
        await until(lambda: driver.stopped == ["t-1"])
        for reader, _ in idle:  # stopping the instance ends what was open on it
            assert await asyncio.wait_for(reader.read(), 5) == b""

    run_gateway(test, ScalePolicy(idle_seconds=30), limits=Limits(busy_grace=5),
                protocol="tcp")


@PROTOCOLS
def test_a_slow_answer_keeps_its_instance_however_long_it_takes(protocol: str) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        driver.hang = True
        pending = asyncio.create_task(get(gw.port))
        await until(lambda: [v.connections for v in gw.views() if v.state == "running"] == [1])
        clock.now += 600
        await asyncio.sleep(0.5)
        assert driver.stopped == [] and driver.paused == []
        driver.hang = False
        assert ok(await pending)

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2), protocol=protocol)


def test_an_instance_that_cannot_pause_is_tried_once_and_keeps_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        async def cannot(handle: object) -> None:
            raise NotImplementedError("this backend cannot pause")

        driver.pause = cannot  # type: ignore[method-assign]
        assert ok(await get(gw.port))
        for _ in range(5):
            clock.now += 3
            await asyncio.sleep(0.3)
        assert caplog.text.count("could not pause") == 1
        assert ok(await get(gw.port))

    run_gateway(test, ScalePolicy(idle_seconds=60, pause_seconds=2))
