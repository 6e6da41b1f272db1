"""Fakes for the gateway's tests: instances are in-process HTTP/1.1 servers, time is a
fake clock, so cold starts, scale to zero, failures and replaces run in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import wsproto
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

from krait.fleet.driver import BootFailed, Driver, Handle, ImageRef
from krait.fleet.gateway import Gateway
from krait.fleet.metrics import Metrics
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
    connections: int = 0  # accepted in all
    dead: bool = False


class FakeDriver(Driver):
    """Each instance answers every HTTP/1.1 request (keep-alive, as a real server does)
    with the path, its generation and its id; it can be made to fail its boot, hang its
    answers, or die. ``/sleep/N`` answers after N tenths of a second; ``/stream`` answers
    in chunks until ``stream_open`` is set; ``/ws`` accepts a WebSocket and echoes its
    messages (wsproto, as a real server)."""

    def __init__(self, boot_delay: float = 0.05) -> None:
        self.boot_delay = boot_delay
        self.fail: str | None = None
        self.hang = False
        self.stream_open = asyncio.Event()
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

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.add(writer)
            self.instances[instance_id].connections += 1
            try:
                while await self._one(reader, writer, image, instance_id):
                    pass
            except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError,
                    h11.ProtocolError):
                pass
            finally:
                writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        handle = Handle(instance_id, ("127.0.0.1", port))
        self.handles[instance_id] = handle
        self.instances[instance_id] = FakeInstance(server, writers)
        return handle

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   image: ImageRef, instance_id: str) -> bool:
        """One request and its answer; whether the connection goes on."""
        head = await reader.readuntil(b"\r\n\r\n")
        first, *lines = head.decode("latin-1").split("\r\n")
        _method, path, version = first.split(" ")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines if line)}
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        while self.hang or self.handles[instance_id].paused:
            await asyncio.sleep(0.01)  # a paused VM answers nothing
        if path.startswith("/sleep/"):  # a request that takes N tenths of a second
            await asyncio.sleep(int(path.rpartition("/")[2]) / 10)
        if path == "/ws":
            await self._websocket(head, reader, writer)
            return False
        if path == "/stream":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                         b"content-type: text/event-stream\r\n\r\n")
            while not self.stream_open.is_set():
                writer.write(b"7\r\ndata: x\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stream_open.wait(), 0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        body = f"path={path} gen={image.generation} id={instance_id}".encode()
        keep = version == "HTTP/1.1" and headers.get("connection", "") != "close"
        close = "" if keep else "connection: close\r\n"
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{close}\r\n"
                     .encode() + body)
        await writer.drain()
        return keep

    async def _websocket(self, head: bytes, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        ws.receive_data(head)
        data = b""
        while True:
            for event in ws.events():
                if isinstance(event, Request):
                    data += ws.send(AcceptConnection())
                elif isinstance(event, Message):
                    data += ws.send(TextMessage(data=f"echo {event.data}"))
                elif isinstance(event, Ping):
                    data += ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    writer.write(data + ws.send(event.response()))
                    await writer.drain()
                    return
            writer.write(data)
            await writer.drain()
            data = b""
            chunk = await reader.read(65536)
            if not chunk:
                return
            ws.receive_data(chunk)

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


def ok(answer: bytes) -> bool:
    """A 200, whichever HTTP version the gateway answered with."""
    return answer.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]


async def get(port: int, timeout: float = 5.0, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
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
                protocol: str = "http", metrics: Metrics | None = None,
                **driver_args: Any) -> None:
    async def main() -> None:
        clock = FakeClock()
        driver = FakeDriver(**driver_args)
        async with Gateway(driver, image(1), policy or ScalePolicy(idle_seconds=30),
                           "t", clock=clock, boot_timeout=5, limits=limits,
                           protocol=protocol, metrics=metrics) as gateway:
            await test(gateway, driver, clock)
        assert driver.running() == [], "the gateway left instances running"

    asyncio.run(main())
