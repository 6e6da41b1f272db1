"""The on-demand gateway behind ``krait serve``: a TCP front proxy on the host.

A connection that finds no ready instance is held while one boots (or wakes from a
snapshot), then bytes flow both ways. Decisions come from :func:`krait.fleet.policy.plan`
(pure); this module observes, acts and moves bytes. A boot that fails answers the held
connections with ``503`` and the reason; an instance that dies before it answered a
connection answers it with ``502``; the next connection boots a new instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from krait.errors import ConfigError
from krait.fleet.driver import BootFailed, Driver, Handle, ImageRef
from krait.fleet.policy import (
    BOOTING,
    PAUSED,
    READY,
    STOPPING,
    InstanceView,
    Observed,
    ScalePolicy,
    pick,
    plan,
)

log = logging.getLogger("krait.fleet")
TICK = 0.2  # how often idle timers and instance health are looked at


@dataclass
class Instance:
    id: str
    image: ImageRef
    state: str = BOOTING
    connections: int = 0
    idle_since: float | None = None
    handle: Handle | None = None
    served: int = 0
    # One connect at a time per instance (see connect_upstream); one pause or resume.
    connecting: asyncio.Lock = field(default_factory=asyncio.Lock)
    tiering: asyncio.Lock = field(default_factory=asyncio.Lock)

    def view(self) -> InstanceView:
        return InstanceView(self.id, self.image.generation, self.state, self.connections,
                            self.idle_since)


@dataclass
class Stats:
    """Counters for tests, the benchmark and the log."""

    boots: int = 0
    wakes: int = 0  # boots that were snapshot wakes
    pauses: int = 0
    resumes: int = 0
    boot_failures: int = 0
    stops: int = 0
    deaths: int = 0  # instances that ended without being asked
    connections: int = 0
    rejected: int = 0  # answered 503 (no instance could be had)
    upstream_errors: int = 0  # answered 502 or cut (an instance failed mid-connection)
    boot_seconds: list[float] = field(default_factory=list)


def http_error(status: int, reason: str) -> bytes:
    title = {502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    body = f"krait: {reason}\n".encode()
    return (f"HTTP/1.1 {status} {title}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


async def connect_upstream(address: tuple[str, int], attempt: float = 0.05,
                           timeout: float = 10.0
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to an instance's forwarded port.

    QEMU's user-mode network listens on it with a backlog of 1, so in a burst of connects
    the kernel drops SYNs and each dropped one waits for TCP's 1 s retransmit. On
    loopback a handshake takes microseconds: give up on an attempt early and send a new
    SYN instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(asyncio.open_connection(*address), attempt)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise ConnectionError(f"{address[0]}:{address[1]} does not accept") from None
            attempt = min(attempt * 1.5, 0.5)


class Gateway:
    def __init__(self, driver: Driver, image: ImageRef, policy: ScalePolicy, name: str,
                 host: str = "127.0.0.1", port: int = 0, boot_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.driver = driver
        self.image = image
        self.policy = policy
        self.name = name
        self.host, self.port = host, port
        self.boot_timeout = boot_timeout
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        self.waiting = 0
        self.last_failure: float | None = None
        self.last_failure_reason = ""
        self.replaced_at: float | None = None
        self.reject = False
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                      reuse_address=True, backlog=1024)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror}",
                              hint="pick another --port, or stop what is listening there"
                              ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop_task = asyncio.create_task(self._control_loop())

    async def close(self, grace: float = 20.0) -> None:
        """Stop listening, cut connections, and stop every instance (gracefully for up to
        ``grace`` seconds; the driver then ends whatever is left)."""
        self._closing = True
        log.info("%s: stopping (%d instances)", self.name, len(self.instances))
        if self._server is not None:
            self._server.close()
        if self._loop_task is not None:
            self._wake.set()
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task], timeout=2)
        tasks = [*self._tasks, *self._clients]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        stops = [asyncio.ensure_future(self._stop(i)) for i in list(self.instances.values())]
        if stops:
            await asyncio.wait(stops, timeout=grace)
        await self.driver.close()
        log.debug("%s: stopped", self.name)

    def replace(self, image: ImageRef) -> None:
        """Serve ``image`` from now on: boot it, switch new connections once it is ready,
        let old connections finish, then stop the old instances."""
        if image.digest != self.image.digest:
            self.driver.forget_snapshots(self.image)
        self.image = image
        self.replaced_at = self.clock()
        self.last_failure = None
        log.info("%s: replacing with %s (generation %d)", self.name, image.path,
                 image.generation)
        self.notify()

    # -- observing and deciding --------------------------------------------------------
    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._wake.set()

    def observed(self) -> Observed:
        return Observed(now=self.clock(), generation=self.image.generation,
                        waiting=self.waiting,
                        instances=tuple(i.view() for i in self.instances.values()),
                        last_failure=self.last_failure, replaced_at=self.replaced_at)

    def reconcile(self) -> None:
        for inst in list(self.instances.values()):
            if (inst.state in (READY, PAUSED) and inst.handle is not None
                    and not self.driver.alive(inst.handle)):
                log.warning("%s: instance %s died", self.name, inst.id)
                self.stats.deaths += 1
                self._spawn(self._stop(inst))
        decision = plan(self.observed(), self.policy)
        for _ in range(decision.start):
            inst = Instance(f"{self.name}-{next(self._ids)}", self.image)
            self.instances[inst.id] = inst
            self._spawn(self._boot(inst))
        for inst_id in decision.stop:
            found = self.instances.get(inst_id)
            if found is not None and found.state != STOPPING:
                why = ("replaced" if found.image.generation != self.image.generation
                       else f"idle for {self.policy.idle_seconds:g}s")
                log.info("%s: stopping %s (%s)", self.name, found.id, why)
                self._spawn(self._stop(found))
        for inst_id in decision.pause:
            found = self.instances.get(inst_id)
            if found is not None and found.state == READY:
                self._spawn(self._pause(found))
        if decision.reject_waiting != self.reject:
            self.reject = decision.reject_waiting
            self.notify()

    async def _control_loop(self) -> None:
        # Python 3.11's wait_for can swallow a cancellation that races with its timeout,
        # so the loop also ends on the _closing flag rather than on cancel() alone.
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK)
            self._wake.clear()
            if not self._closing:
                self.reconcile()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- acting -------------------------------------------------------------------------
    async def _boot(self, inst: Instance) -> None:
        self.stats.boots += 1
        log.info("%s: starting %s (%s)", self.name, inst.id, inst.image.path.name)
        try:
            handle = await asyncio.wait_for(self.driver.boot(inst.image, inst.id),
                                            self.boot_timeout + 30)
        except Exception as e:  # a failed boot must answer its held connections, whatever
            if isinstance(e, BootFailed):
                reason = e.reason
            elif isinstance(e, TimeoutError):
                reason = "the instance did not start in time"
            else:
                log.debug("boot failed", exc_info=True)
                reason = f"internal error while starting: {type(e).__name__}: {e}"
            self.stats.boot_failures += 1
            self.last_failure = self.clock()
            self.last_failure_reason = reason
            log.error("%s: %s failed to start: %s", self.name, inst.id, reason)
            self.instances.pop(inst.id, None)
            self.notify()
            return
        inst.handle = handle
        if self._closing or inst.state == STOPPING:
            await self.driver.stop(handle)
            return
        inst.state = READY
        inst.idle_since = self.clock()
        self.stats.boot_seconds.append(round(handle.boot_seconds, 3))
        if handle.woke_from_snapshot:
            self.stats.wakes += 1
        how = "woke from a snapshot" if handle.woke_from_snapshot else "booted"
        log.info("%s: %s %s in %.2fs (port %d)", self.name, inst.id, how, handle.boot_seconds,
                 handle.address[1])
        self.notify()

    async def _pause(self, inst: Instance) -> None:
        async with inst.tiering:
            if inst.state != READY or inst.connections or inst.handle is None:
                return  # a connection came while the decision was made
            try:
                await self.driver.pause(inst.handle)
            except Exception as e:
                log.warning("%s: could not pause %s: %s", self.name, inst.id, e)
                return
            inst.state = PAUSED
            self.stats.pauses += 1
            log.debug("%s: paused %s", self.name, inst.id)

    async def _resume(self, inst: Instance) -> bool:
        """Run a paused instance again before a connection goes to it; False if it could
        not be resumed (it is stopped, and the connection looks for another)."""
        async with inst.tiering:
            if inst.state != PAUSED:
                return inst.state == READY
            assert inst.handle is not None
            try:
                await self.driver.resume(inst.handle)
            except Exception as e:
                log.warning("%s: could not resume %s: %s", self.name, inst.id, e)
                self._spawn(self._stop(inst))
                return False
            inst.state = READY
            self.stats.resumes += 1
            return True

    async def _stop(self, inst: Instance) -> None:
        if inst.state == STOPPING:
            return
        inst.state = STOPPING
        self.notify()
        try:
            if inst.handle is not None:
                await self.driver.stop(inst.handle)
                self.stats.stops += 1
        finally:
            self.instances.pop(inst.id, None)
            self.notify()

    # -- connections --------------------------------------------------------------------
    async def _acquire(self) -> Instance | None:
        """Hold the connection until an instance is ready; None means answer 503."""
        deadline = self.clock() + self.boot_timeout
        self.waiting += 1
        self.notify()
        try:
            while True:
                chosen = pick(tuple(i.view() for i in self.instances.values()),
                              self.image.generation)
                if chosen is not None:
                    inst = self.instances[chosen]
                    inst.connections += 1
                    inst.idle_since = None
                    return inst
                if self.reject or self._closing or self.clock() > deadline:
                    return None
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), TICK)
        finally:
            self.waiting -= 1

    def _release(self, inst: Instance) -> None:
        inst.connections -= 1
        inst.served += 1
        if inst.connections == 0:
            inst.idle_since = self.clock()
        self.notify()

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        me = asyncio.current_task()
        if me is not None:
            self._clients.add(me)
        try:
            for _attempt in range(3):
                inst = await self._acquire()
                if inst is None:
                    self.stats.rejected += 1
                    reason = (f"the app failed to start: {self.last_failure_reason}"
                              if self.last_failure_reason else "no instance is available")
                    writer.write(http_error(503, reason))
                    await writer.drain()
                    return
                try:
                    assert inst.handle is not None
                    if inst.state == PAUSED and not await self._resume(inst):
                        continue
                    try:
                        async with inst.connecting:
                            up_reader, up_writer = await connect_upstream(
                                inst.handle.address)
                    except OSError as e:
                        # It died between the health check and now: look again.
                        if not self.driver.alive(inst.handle):
                            self.stats.deaths += 1
                            self._spawn(self._stop(inst))
                            continue
                        self.stats.upstream_errors += 1
                        writer.write(http_error(502, f"instance {inst.id} does not accept "
                                                f"connections: {e}"))
                        await writer.drain()
                        return
                    await self._forward(reader, writer, up_reader, up_writer, inst)
                    return
                finally:
                    self._release(inst)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if me is not None:
                self._clients.discard(me)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                       inst: Instance) -> None:
        answered = asked = False

        async def client_to_upstream() -> None:
            nonlocal asked
            try:
                while data := await reader.read(65536):
                    asked = True
                    up_writer.write(data)
                    await up_writer.drain()
                if up_writer.can_write_eof():
                    up_writer.write_eof()
            except OSError:
                pass

        async def upstream_to_client() -> None:
            nonlocal answered
            while data := await up_reader.read(65536):
                answered = True
                writer.write(data)
                await writer.drain()

        to_up = asyncio.create_task(client_to_upstream())
        try:
            await upstream_to_client()
        except OSError:
            pass
        finally:
            to_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await to_up
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
        if asked and not answered:
            assert inst.handle is not None
            # Nothing came back: the instance failed this connection. Say so, cleanly.
            self.stats.upstream_errors += 1
            await asyncio.sleep(0.05)  # let a dying VM finish dying before we look
            dead = not self.driver.alive(inst.handle)
            writer.write(http_error(502, f"instance {inst.id} "
                                    f"{'died' if dead else 'closed the connection'} "
                                    "before answering"))
            await writer.drain()
