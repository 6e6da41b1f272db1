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
    InstanceView,
    Observed,
    ScalePolicy,
    pick,
    plan,
)
from krait.fleet.pool import Connection, Limits, Pool
from krait.fleet.state import State

log = logging.getLogger("krait.fleet")
TICK = 0.2  # how often idle timers and instance health are looked at


@dataclass
class Instance:
    id: str
    image: ImageRef
    state: State = State.BOOTING
    idle_since: float | None = None  # when it got ready, or its last connection ended
    handle: Handle | None = None
    served: int = 0
    # One connect at a time per instance (see connect_upstream); one pause or resume.
    connecting: asyncio.Lock = field(default_factory=asyncio.Lock)
    tiering: asyncio.Lock = field(default_factory=asyncio.Lock)


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
    refused: int = 0  # answered 503 at once: over a connection limit
    timed_out: int = 0  # closed: no first bytes in time, or idle too long
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
                 clock: Callable[[], float] = time.monotonic,
                 limits: Limits | None = None) -> None:
        self.driver = driver
        self.image = image
        self.policy = policy
        self.name = name
        self.host, self.port = host, port
        self.boot_timeout = boot_timeout
        self.clock = clock
        self.instances: dict[str, Instance] = {}
        self.pool = Pool(limits or Limits())
        self._waiters: dict[int, asyncio.Event] = {}
        self.last_failure: float | None = None
        self.last_failure_reason = ""
        self.replaced_at: float | None = None
        self.reject = False
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None  # boots, stops, pauses, the control loop
        self._ready = asyncio.Event()
        self._clients: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Gateway:
        """Listening, until the block ends: then closed, every instance stopped."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                      reuse_address=True, backlog=1024)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror}",
                              hint="pick another --port, or stop what is listening there"
                              ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._supervisor = asyncio.create_task(self._supervise())
        await self._ready.wait()

    async def close(self, grace: float = 20.0) -> None:
        """Stop listening, cut connections, and stop every instance (gracefully for up to
        ``grace`` seconds; the driver then ends whatever is left)."""
        self._closing = True
        log.info("%s: stopping (%d instances)", self.name, len(self.instances))
        if self._server is not None:
            self._server.close()
        if self._supervisor is not None:
            self._wake.set()
            self._supervisor.cancel()  # and with it every boot, stop and pause under way
            await asyncio.wait([self._supervisor], timeout=5)
        # Client connections are not in the group: one client's failure must end only
        # its own connection, never the gateway.
        for task in self._clients:
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=5)
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
        self._assign()
        self._wake.set()

    def observed(self) -> Observed:
        return Observed(now=self.clock(), generation=self.image.generation,
                        waiting=len(self.pool.waiting), instances=self.views(),
                        last_failure=self.last_failure, replaced_at=self.replaced_at)

    def reconcile(self) -> None:
        for inst in list(self.instances.values()):
            if (inst.state in (State.RUNNING, State.PAUSED) and inst.handle is not None
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
            if found is not None and found.state != State.STOPPING:
                why = ("replaced" if found.image.generation != self.image.generation
                       else f"idle for {self.policy.idle_seconds:g}s")
                log.info("%s: stopping %s (%s)", self.name, found.id, why)
                self._spawn(self._stop(found))
        for inst_id in decision.pause:
            found = self.instances.get(inst_id)
            if found is not None and found.state == State.RUNNING:
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

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._control_loop())
            self._ready.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an action on an instance in the gateway's task group. An action that fails
        is logged; it does not end the gateway."""
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s: internal error", self.name)

        if self._group is None or self._closing:
            coro.close()
            return
        self._group.create_task(guarded())

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
        if self._closing or inst.state == State.STOPPING:
            await self.driver.stop(handle)
            return
        inst.state = State.RUNNING
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
            if (inst.state != State.RUNNING or self.pool.busy(inst.id, self.clock())
                    or inst.handle is None):
                return  # a connection came while the decision was made
            try:
                await self.driver.pause(inst.handle)
            except Exception as e:
                log.warning("%s: could not pause %s: %s", self.name, inst.id, e)
                return
            inst.state = State.PAUSED
            self.stats.pauses += 1
            log.debug("%s: paused %s", self.name, inst.id)

    async def _resume(self, inst: Instance) -> bool:
        """Run a paused instance again before a connection goes to it; False if it could
        not be resumed (it is stopped, and the connection looks for another)."""
        async with inst.tiering:
            if inst.state != State.PAUSED:
                return inst.state == State.RUNNING
            assert inst.handle is not None
            try:
                await self.driver.resume(inst.handle)
            except Exception as e:
                log.warning("%s: could not resume %s: %s", self.name, inst.id, e)
                self._spawn(self._stop(inst))
                return False
            inst.state = State.RUNNING
            self.stats.resumes += 1
            return True

    async def _stop(self, inst: Instance) -> None:
        if inst.state == State.STOPPING:
            return
        inst.state = State.STOPPING
        self.notify()
        try:
            if inst.handle is not None:
                await self.driver.stop(inst.handle)
                self.stats.stops += 1
        finally:
            self.instances.pop(inst.id, None)
            self.notify()

    # -- connections --------------------------------------------------------------------
    def view(self, inst: Instance) -> InstanceView:
        """What the policy sees of an instance: the connections busy on it, and since
        when it has carried nothing (open but silent connections do not count)."""
        now = self.clock()
        busy = self.pool.busy(inst.id, now)
        idle = None
        if busy == 0:
            idle = max((t for t in (inst.idle_since, self.pool.idle_since(inst.id, now))
                        if t is not None), default=None)
        return InstanceView(inst.id, inst.image.generation, inst.state, busy, idle)

    def views(self) -> tuple[InstanceView, ...]:
        return tuple(self.view(i) for i in self.instances.values())

    def _assign(self) -> None:
        """Waiting connections get instances, oldest first, in one step."""
        assigned = self.pool.assign(lambda: pick(self.views(), self.image.generation))
        for conn in assigned:
            if (event := self._waiters.get(conn.id)) is not None:
                event.set()

    async def _acquire(self, conn: Connection) -> Instance | str:
        """Hold the connection until an instance is assigned to it; a str says why not
        (the client gets 503)."""
        refusal = self.pool.enqueue(conn)
        if refusal is not None:
            return refusal
        deadline = self.clock() + self.boot_timeout
        event = self._waiters[conn.id] = asyncio.Event()
        self.notify()
        try:
            while True:
                self._assign()
                if conn.instance is not None and conn.instance in self.instances:
                    return self.instances[conn.instance]
                if self.reject:
                    return "the app failed to start"
                if self._closing:
                    return "the server is stopping"
                if self.clock() > deadline:
                    return "no instance became ready in time"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), TICK)
                event.clear()
        finally:
            self._waiters.pop(conn.id, None)
            if conn.id in self.pool.waiting:
                self.pool.waiting.remove(conn.id)

    def _release(self, inst: Instance, conn: Connection) -> None:
        self.pool.release(conn)
        inst.served += 1
        inst.idle_since = self.clock()
        self.notify()

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        admitted = self.pool.admit(client, self.clock())
        if isinstance(admitted, str):
            self.stats.refused += 1
            log.warning("%s: refused a connection: %s", self.name, admitted)
            await self._refuse(reader, writer)
            return
        conn = admitted
        me = asyncio.current_task()
        if me is not None:
            self._clients.add(me)
        limits = self.pool.limits
        try:
            # Nothing is booted or connected for a client that sends nothing.
            try:
                first = await asyncio.wait_for(reader.read(65536), limits.first_byte_timeout)
            except TimeoutError:
                self.stats.timed_out += 1
                return
            if not first:
                return
            self.pool.touch(conn, self.clock(), asked=True)
            for _attempt in range(3):
                got = await self._acquire(conn)
                if isinstance(got, str):
                    self.stats.rejected += 1
                    if self.last_failure_reason:
                        log.info("%s: 503 (%s; last failure: %s)", self.name, got,
                                 self.last_failure_reason)
                    writer.write(http_error(503, got))
                    await asyncio.wait_for(writer.drain(), limits.write_timeout)
                    return
                inst = got
                try:
                    assert inst.handle is not None
                    if inst.state == State.PAUSED and not await self._resume(inst):
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
                        log.warning("%s: %s does not accept connections: %s", self.name,
                                    inst.id, e)
                        writer.write(http_error(502, "the app does not accept connections"))
                        await asyncio.wait_for(writer.drain(), limits.write_timeout)
                        return
                    up_writer.write(first)
                    await self._forward(reader, writer, up_reader, up_writer, inst, conn)
                    return
                finally:
                    self._release(inst, conn)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.pool.close(conn)
            if me is not None:
                self._clients.discard(me)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _refuse(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """503 to a connection over a limit. What the client sent is read (briefly) before
        closing, or the kernel answers the unread bytes with a reset that can destroy the
        503 before the client reads it."""
        with contextlib.suppress(Exception):
            writer.write(http_error(503, "too many connections"))
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(writer.drain(), 1.0)
            await asyncio.wait_for(reader.read(65536), 1.0)
        with contextlib.suppress(Exception):
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                       inst: Instance, conn: Connection) -> None:
        """Bytes both ways (the client's first bytes were sent already), each move
        noted; nothing either way for idle_timeout, or a side that does not take what is
        written for write_timeout, ends the connection."""
        limits = self.pool.limits
        answered = False

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       upstream: bool) -> None:
            nonlocal answered
            while True:
                data = await src.read(65536)
                if not data:
                    break
                self.pool.touch(conn, self.clock(), asked=upstream)
                if not upstream:
                    answered = True
                dst.write(data)
                await asyncio.wait_for(dst.drain(), limits.write_timeout)
            if upstream and dst.can_write_eof():
                dst.write_eof()

        def idle() -> bool:
            return self.clock() - conn.last_active >= limits.idle_timeout

        to_up = asyncio.create_task(pump(reader, up_writer, True))
        to_client = asyncio.create_task(pump(up_reader, writer, False))
        try:
            while not to_client.done():
                await asyncio.wait([to_client], timeout=min(1.0, limits.idle_timeout))
                if idle():
                    self.stats.timed_out += 1
                    break
            if to_client.done() and not to_client.cancelled():
                with contextlib.suppress(OSError, TimeoutError):
                    to_client.result()
        finally:
            for task in (to_up, to_client):
                task.cancel()
            for task in (to_up, to_client):
                with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                    await task
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
        if not answered and not idle():  # the client asked (its first bytes were sent)
            assert inst.handle is not None
            # Nothing came back: the instance failed this connection. Say so, cleanly.
            self.stats.upstream_errors += 1
            await asyncio.sleep(0.05)  # let a dying VM finish dying before we look
            dead = not self.driver.alive(inst.handle)
            log.warning("%s: %s %s before answering", self.name, inst.id,
                        "died" if dead else "closed the connection")
            writer.write(http_error(502, "the app ended the connection before answering"))
            await asyncio.wait_for(writer.drain(), limits.write_timeout)
