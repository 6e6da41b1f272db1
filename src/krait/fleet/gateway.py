"""The on-demand gateway behind ``krait serve``: a front proxy on the host.

A request (protocol "http", :mod:`krait.fleet.http_proxy`) or a connection (protocol
"tcp", :mod:`krait.fleet.tcp_proxy`) that finds no ready instance is held while one
boots (or wakes from a snapshot, or resumes). Decisions come from
:func:`krait.fleet.policy.plan` (pure); this module observes, acts and leases instances;
the two proxies move the bytes. A boot that fails answers the held requests with ``503``
and the reason goes to the log; an instance that dies before it answered gives ``502``;
the next request boots a new instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from krait.errors import ConfigError
from krait.fleet.driver import BootFailed, Driver, Handle, ImageRef
from krait.fleet.heads import Refusal, answer_and_close, http_error
from krait.fleet.http_proxy import serve_http
from krait.fleet.metrics import Metrics, access_line
from krait.fleet.policy import (
    InstanceView,
    Observed,
    ScalePolicy,
    pick,
    plan,
)
from krait.fleet.pool import Connection, Limits, Pool
from krait.fleet.state import State
from krait.fleet.tcp_proxy import serve_tcp
from krait.fleet.upstream import Upstreams

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
    ready_at: float = 0.0  # time.monotonic() when it became ready (a boot or a wake)
    unpausable: bool = False  # a pause failed: it stays running until it is stopped
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
    bad_requests: int = 0  # answered 400/405/408/431 by the gateway (HTTP)
    timed_out: int = 0  # closed: no first bytes in time, or idle too long
    upstream_errors: int = 0  # answered 502 or cut (an instance failed mid-connection)
    boot_seconds: list[float] = field(default_factory=list)


@dataclass
class Lease:
    """An instance given to one request (HTTP) or connection (TCP), running, and how it
    was had: "cold" (booted for it), "wake" (from a snapshot), "resume" (from pause) or
    "warm" (it was running)."""

    instance: Instance
    how: str


class Gateway:
    def __init__(self, driver: Driver, image: ImageRef, policy: ScalePolicy, name: str,
                 host: str = "127.0.0.1", port: int = 0, boot_timeout: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 limits: Limits | None = None, protocol: str = "http",
                 metrics: Metrics | None = None, listen: bool = True) -> None:
        self.driver = driver
        self.protocol = protocol  # "http" or "tcp" (see krait.config.settings)
        self.listen = listen  # False: a router (krait.fleet.router) hands it requests
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
        self.metrics = metrics or Metrics()
        self.upstreams = Upstreams()  # HTTP connections kept open to instances
        self.sessions = 0  # WebSockets open (tunnels after a 101)
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
        if not self.listen:
            self.metrics.watch(self)
            self._supervisor = asyncio.create_task(self._supervise())
            await self._ready.wait()
            return
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                      reuse_address=True, backlog=1024)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror}",
                              hint="pick another --port, or stop what is listening there"
                              ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.metrics.watch(self)
        self._supervisor = asyncio.create_task(self._supervise())
        await self._ready.wait()

    async def close(self, grace: float = 20.0, drain: float = 10.0) -> None:
        """Stop listening; let the requests in flight finish, for up to ``drain`` seconds
        (no new request is read, and those still waiting for an instance get 503); then
        cut connections and stop every instance (gracefully for up to ``grace`` seconds;
        the driver then ends whatever is left)."""
        self._closing = True
        log.info("%s: stopping (%d instances)", self.name, len(self.instances))
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + drain
        if n := self.in_flight():
            log.info("%s: letting %d requests in flight finish (up to %gs)", self.name, n,
                     drain)
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
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
        self.upstreams.drop_all()
        self.metrics.unwatch(self)
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
        inst.ready_at = time.monotonic()
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
                    or inst.handle is None or inst.unpausable):
                return  # a connection came while the decision was made
            try:
                await self.driver.pause(inst.handle)
            except Exception as e:
                # Said once: a backend that cannot pause (process) would say it each tick.
                log.warning("%s: could not pause %s: %s", self.name, inst.id, e)
                inst.unpausable = True
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
        self.upstreams.drop(inst.id)
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

    async def lease(self, conn: Connection) -> Lease | str:
        """A running instance for ``conn``'s request (resumed first if it was paused); a
        str says why there is none (the client gets 503). The caller releases it."""
        asked = time.monotonic()
        for _attempt in range(3):
            got = await self._acquire(conn)
            if isinstance(got, str):
                return got
            assert got.handle is not None
            how = "warm"
            if got.state == State.PAUSED:
                if not await self._resume(got):
                    self.release(got, conn)
                    continue
                how = "resume"
            elif got.ready_at >= asked:  # it was booted or woken while this waited
                how = "wake" if got.handle.woke_from_snapshot else "cold"
            return Lease(got, how)
        return "no instance could be resumed"

    def no_instance(self, why: str) -> None:
        """Count and log a request that gets 503 because ``lease`` found no instance."""
        self.stats.rejected += 1
        self.metrics.refused.labels(self.name, "no_instance").inc()
        if self.last_failure_reason:
            log.info("%s: 503 (%s; last failure: %s)", self.name, why, self.last_failure_reason)

    def release(self, inst: Instance, conn: Connection) -> None:
        self.pool.release(conn)
        inst.served += 1
        inst.idle_since = self.clock()
        self.notify()

    def lost(self, inst: Instance) -> None:
        """``inst`` was found dead while a request used it: stop it (the next request
        gets another)."""
        if inst.state != State.STOPPING:
            self.stats.deaths += 1
            self._spawn(self._stop(inst))

    def count_refusal(self, refusal: Refusal) -> None:
        self.stats.bad_requests += 1
        self.metrics.refused.labels(self.name, {
            400: "malformed", 405: "method", 408: "slow_request", 431: "head_too_large",
        }.get(refusal.status, str(refusal.status))).inc()

    def refused_request(self, conn: Connection, refusal: Refusal) -> None:
        """A request refused before its head was read: counted and logged here."""
        self.count_refusal(refusal)
        self.metrics.requests.labels(self.name, str(refusal.status)).inc()
        log.debug("%s: %d to %s: %s", self.name, refusal.status, conn.client, refusal.reason)
        access_line(conn.client, None, refusal.status, 0, 0.0)

    @property
    def closing(self) -> bool:
        return self._closing

    def in_flight(self) -> int:
        """Connections with a request that has not had its whole answer (a WebSocket's
        tunnel counts as one)."""
        return sum(1 for c in self.pool.connections.values()
                   if c.holding or (c.instance is not None and c.last_asked > c.last_answered))

    # -- what the metrics read (krait.fleet.metrics.Watched) ---------------------------
    def counts(self) -> dict[str, int]:
        return {k: v for k, v in vars(self.stats).items() if isinstance(v, int)}

    def instance_states(self) -> dict[str, int]:
        return dict(Counter(str(i.state) for i in self.instances.values()))

    def open_connections(self) -> int:
        return len(self.pool.connections)

    def open_sessions(self) -> int:
        return self.sessions

    # -- clients ---------------------------------------------------------------------------
    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        admitted = self.pool.admit(client, self.clock())
        if isinstance(admitted, str):
            self.stats.refused += 1
            per_client = admitted.startswith("too many connections from")
            self.metrics.refused.labels(
                self.name, "per_client" if per_client else "connections").inc()
            log.warning("%s: refused a connection: %s", self.name, admitted)
            await answer_and_close(reader, writer, http_error(503, "too many connections"))
            return
        conn = admitted
        me = asyncio.current_task()
        if me is not None:
            self._clients.add(me)
        try:
            if self.protocol == "http":
                await serve_http(self, conn, reader, writer)
            else:
                await serve_tcp(self, conn, reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.pool.close(conn)
            if me is not None:
                self._clients.discard(me)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()
