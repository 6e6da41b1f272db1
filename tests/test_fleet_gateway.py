"""The gateway's I/O with a fake driver: instances are in-process TCP servers, time is a
fake clock, so cold starts, scale to zero, failures and replaces run in milliseconds."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from krait.errors import ConfigError
from krait.fleet.driver import BootFailed, Driver, Handle, ImageRef
from krait.fleet.gateway import Gateway
from krait.fleet.policy import ScalePolicy
from krait.fleet.pool import Limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeInstance:
    server: asyncio.Server
    writers: set[asyncio.StreamWriter]
    dead: bool = False


class FakeDriver(Driver):
    """Each instance answers `HTTP/1.0 200` with its generation and id; it can be made to
    fail its boot, hang its answers, or die."""

    def __init__(self, boot_delay: float = 0.05) -> None:
        self.boot_delay = boot_delay
        self.fail: str | None = None
        self.hang = False
        self.keep_alive = False  # answer, then leave the connection open
        self.booted: list[tuple[str, int]] = []
        self.stopped: list[str] = []
        self.paused: list[str] = []
        self.resumed: list[str] = []
        self.handles: dict[str, Handle] = {}
        self.instances: dict[str, FakeInstance] = {}

    async def boot(self, image: ImageRef, instance_id: str) -> Handle:
        self.booted.append((instance_id, image.generation))
        await asyncio.sleep(self.boot_delay)
        if self.fail:
            raise BootFailed(self.fail)
        writers: set[asyncio.StreamWriter] = set()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.add(writer)
            try:
                await reader.readline()
                while self.hang or self.handles[instance_id].paused:
                    await asyncio.sleep(0.01)  # a paused VM answers nothing
                writer.write(f"HTTP/1.0 200 OK\r\n\r\ngen={image.generation} "
                             f"id={instance_id}".encode())
                await writer.drain()
                if self.keep_alive:
                    await reader.read()
                writer.close()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writers.discard(writer)

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        handle = Handle(instance_id, ("127.0.0.1", port))
        self.handles[instance_id] = handle
        self.instances[instance_id] = FakeInstance(server, writers)
        return handle

    async def stop(self, handle: Handle) -> None:
        self._end(handle)
        self.stopped.append(handle.id)

    async def pause(self, handle: Handle) -> None:
        handle.paused = True
        self.paused.append(handle.id)

    async def resume(self, handle: Handle) -> None:
        handle.paused = False
        self.resumed.append(handle.id)

    def alive(self, handle: Handle) -> bool:
        return not self.instances[handle.id].dead

    def kill(self, instance_id: str) -> None:
        """The VM dies: its port closes and its connections are cut."""
        self._end(self.handles[instance_id])

    def _end(self, handle: Handle) -> None:
        instance = self.instances[handle.id]
        instance.dead = True
        instance.server.close()
        for writer in list(instance.writers):
            writer.transport.abort()

    def running(self) -> list[str]:
        return [i for i, x in self.instances.items() if not x.dead]


def image(generation: int = 1) -> ImageRef:
    return ImageRef(Path(f"/images/app-{generation}.krait"), generation, "app", f"d{generation}")


async def get(port: int, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def run_gateway(test: Callable[[Gateway, FakeDriver, FakeClock], Awaitable[None]],
                policy: ScalePolicy | None = None, limits: Limits | None = None,
                **driver_args: Any) -> None:
    async def main() -> None:
        clock = FakeClock()
        driver = FakeDriver(**driver_args)
        async with Gateway(driver, image(1), policy or ScalePolicy(idle_seconds=30),
                           "t", clock=clock, boot_timeout=5, limits=limits) as gateway:
            await test(gateway, driver, clock)
        assert driver.running() == [], "the gateway left instances running"

    asyncio.run(main())


def test_concurrent_cold_start_boots_exactly_once() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        answers = await asyncio.gather(*(get(gw.port) for _ in range(20)))
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers), answers
        assert len(driver.booted) == 1
        assert gw.stats.boots == 1

    run_gateway(test, ScalePolicy(max_instances=4, per_instance=100), boot_delay=0.3)


def test_scale_to_zero_after_idle_then_boot_again() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")
        clock.now += 29
        await asyncio.sleep(0.5)
        assert driver.stopped == []
        clock.now += 2
        await until(lambda: driver.stopped == ["t-1"])
        assert gw.instances == {}
        assert b"id=t-2" in await get(gw.port)  # the next connection boots a new one

    run_gateway(test)


def test_scale_out_under_load_up_to_max_and_spread() -> None:
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
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers)
        ids = [a.split(b"id=")[1] for a in answers]
        assert ids[:3] == [b"t-1"] * 3  # held through the cold start: the first instance
        assert sorted(ids[3:]) == [b"t-2", b"t-2", b"t-3", b"t-3"]  # spread, fewest first

    run_gateway(test, ScalePolicy(max_instances=3, per_instance=1))


def test_boot_failure_answers_503_quickly_and_logs_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
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
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")
        assert len(driver.booted) == 2

    run_gateway(test)


def test_instance_dies_mid_request_gives_502_and_next_request_boots() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")
        driver.hang = True
        pending = asyncio.create_task(get(gw.port))
        await until(lambda: gw.view(gw.instances["t-1"]).connections == 1)
        driver.kill("t-1")
        answer = await pending
        assert answer.startswith(b"HTTP/1.1 502"), answer
        driver.hang = False
        assert b"id=t-2" in await get(gw.port)
        assert gw.stats.deaths == 1

    run_gateway(test)


def test_replace_under_continuous_requests_has_no_failures() -> None:
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
        assert all(r.startswith(b"HTTP/1.0 200") for r in results)
        generations = [r.split(b"gen=")[1].split()[0] for r in results]
        switch = generations.index(b"2")
        assert set(generations[:switch]) == {b"1"}
        assert generations[-1] == b"2"
        assert [gen for _, gen in driver.booted] == [1, 2]

    run_gateway(test, boot_delay=0.2)


def test_port_taken_is_a_clear_error() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            gw = Gateway(FakeDriver(), image(), ScalePolicy(), "t", port=s.getsockname()[1])
            with pytest.raises(ConfigError, match="cannot listen"):
                await gw.start()

    asyncio.run(main())


def test_close_stops_booting_and_ready_instances() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")
        assert driver.running() == ["t-1"]

    run_gateway(test)  # run_gateway asserts nothing runs after close()


def test_an_idle_instance_is_paused_then_resumed_by_the_next_connection() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")
        clock.now += 3  # past pause_seconds, far from idle_seconds
        await until(lambda: driver.paused == ["t-1"])
        assert gw.stats.pauses == 1 and driver.stopped == []
        answer = await get(gw.port)
        assert answer.startswith(b"HTTP/1.0 200") and b"id=t-1" in answer
        assert driver.resumed == ["t-1"] and gw.stats.resumes == 1
        assert len(driver.booted) == 1  # resumed, not booted
        clock.now += 31  # and after idle_seconds, paused or not, it is stopped
        await until(lambda: driver.stopped == ["t-1"])

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2))


def test_concurrent_connections_resume_a_paused_instance_once() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        await get(gw.port)
        clock.now += 3
        await until(lambda: driver.paused == ["t-1"])
        answers = await asyncio.gather(*(get(gw.port) for _ in range(10)))
        assert all(a.startswith(b"HTTP/1.0 200") for a in answers)
        assert driver.resumed == ["t-1"]

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2))


async def hold_open(port: int, send: bytes = b"") -> tuple[asyncio.StreamReader,
                                                           asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


def test_a_client_that_sends_nothing_boots_nothing_and_is_closed() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        silent = [await hold_open(gw.port) for _ in range(50)]
        for reader, _ in silent:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
        assert driver.booted == [] and gw.stats.timed_out == 50
        assert gw.pool.connections == {}
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")

    run_gateway(test, limits=Limits(first_byte_timeout=0.3))


def test_connections_over_a_clients_cap_get_503_and_others_are_served() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        held = [await hold_open(gw.port) for _ in range(3)]
        await until(lambda: len(gw.pool.connections) == 3)
        answer = await get(gw.port)
        assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        assert gw.stats.refused == 1 and driver.booted == []
        for _, writer in held:
            writer.close()
        await until(lambda: not gw.pool.connections)
        assert (await get(gw.port)).startswith(b"HTTP/1.0 200")

    run_gateway(test, limits=Limits(max_per_client=3))


def test_open_keep_alive_connections_do_not_keep_an_instance_from_scaling_to_zero() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        driver.keep_alive = True
        idle = []
        for _ in range(5):
            reader, writer = await hold_open(gw.port, b"GET / HTTP/1.1\r\n\r\n")
            assert (await reader.readuntil(b"id=t-1")).startswith(b"HTTP/1.0 200")
            idle.append((reader, writer))
        assert gw.view(gw.instances["t-1"]).connections == 5  # just answered: busy
        clock.now += 6  # past busy_grace: open, silent connections do not count
        assert gw.view(gw.instances["t-1"]).connections == 0
        clock.now += 30
        await until(lambda: driver.stopped == ["t-1"])
        for reader, _ in idle:  # stopping the instance ends what was open on it
            assert await asyncio.wait_for(reader.read(), 5) == b""

    run_gateway(test, ScalePolicy(idle_seconds=30), limits=Limits(busy_grace=5))


def test_a_slow_answer_keeps_its_instance_however_long_it_takes() -> None:
    async def test(gw: Gateway, driver: FakeDriver, clock: FakeClock) -> None:
        driver.hang = True
        pending = asyncio.create_task(get(gw.port))
        await until(lambda: [v.connections for v in gw.views() if v.state == "running"] == [1])
        clock.now += 600
        await asyncio.sleep(0.5)
        assert driver.stopped == [] and driver.paused == []
        driver.hang = False
        assert (await pending).startswith(b"HTTP/1.0 200")

    run_gateway(test, ScalePolicy(idle_seconds=30, pause_seconds=2))
