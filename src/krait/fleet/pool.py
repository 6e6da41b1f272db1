"""The gateway's bookkeeping of connections, without sockets and without a clock of its own.

Which clients are connected and how many each has, which connections wait for an
instance (a FIFO, assigned in one synchronous step as httpcore's pool assigns its
requests), which instance each connection uses, and when it last moved a byte. The proxy
(:mod:`krait.fleet.gateway`) asks before it accepts, queues and forwards, and does the
I/O. Every limit here is a plain comparison, tested without TCP.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """What one gateway accepts from its clients."""

    max_connections: int = 4096  # open client connections in all
    max_per_client: int = 256  # from one client address
    max_waiting: int = 1024  # held while an instance boots, wakes or resumes
    first_byte_timeout: float = 10.0  # a client must begin its request within this
    idle_timeout: float = 120.0  # nothing either way this long: the connection is closed
    write_timeout: float = 30.0  # a client that does not read its answer this long: closed
    # A connection that moved nothing this long does not count as using its instance:
    # open keep-alive connections do not keep an instance from pausing or scaling to zero.
    busy_grace: float = 5.0
    # HTTP (protocol "http"): a request head must be whole within head_timeout of its
    # first byte, at most max_head bytes and max_headers lines (else 408, 431); a
    # keep-alive connection may wait keepalive_timeout for its next request. A body up to
    # body_buffer is read before an instance is taken, so a slow upload holds none.
    head_timeout: float = 10.0
    max_head: int = 64 << 10
    max_headers: int = 100
    keepalive_timeout: float = 60.0
    body_buffer: int = 64 << 10


@dataclass
class Connection:
    id: int
    client: str
    opened: float
    last_active: float  # the last byte either way
    last_asked: float = 0.0  # the last byte from the client
    last_answered: float = 0.0  # the last byte back to it
    instance: str | None = None  # once assigned
    # An HTTP exchange in flight, a streamed answer or a WebSocket open: busy however
    # long nothing moves (the gateway knows where an exchange ends; bytes alone do not).
    holding: bool = False

    def busy(self, now: float, grace: float) -> bool:
        """Moving bytes, or waiting for an answer (however long the app computes): an
        open keep-alive connection that got its answer is not busy."""
        return (self.holding or now - self.last_active < grace
                or self.last_asked > self.last_answered)


@dataclass
class Pool:
    limits: Limits = field(default_factory=Limits)
    connections: dict[int, Connection] = field(default_factory=dict)
    waiting: deque[int] = field(default_factory=deque)
    per_client: Counter[str] = field(default_factory=Counter)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- clients -------------------------------------------------------------------------
    def admit(self, client: str, now: float) -> Connection | str:
        """A new connection, or why it is refused (answered 503 and closed at once)."""
        if len(self.connections) >= self.limits.max_connections:
            return f"too many connections ({self.limits.max_connections})"
        if self.per_client[client] >= self.limits.max_per_client:
            return f"too many connections from {client} ({self.limits.max_per_client})"
        conn = Connection(next(self._ids), client, now, now)
        self.connections[conn.id] = conn
        self.per_client[client] += 1
        return conn

    def close(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        self.per_client[conn.client] -= 1
        if self.per_client[conn.client] <= 0:
            del self.per_client[conn.client]
        if conn.id in self.waiting:
            self.waiting.remove(conn.id)

    def touch(self, conn: Connection, now: float, *, asked: bool) -> None:
        """``conn`` moved bytes: from the client (``asked``) or back to it."""
        conn.last_active = now
        if asked:
            conn.last_asked = now
        else:
            conn.last_answered = now

    # -- waiting for an instance -------------------------------------------------------------
    def enqueue(self, conn: Connection) -> str | None:
        """Hold ``conn`` until an instance is assigned to it; or why not."""
        if len(self.waiting) >= self.limits.max_waiting:
            return f"too many connections waiting for an instance ({self.limits.max_waiting})"
        conn.instance = None
        self.waiting.append(conn.id)
        return None

    def assign(self, choose: Callable[[], str | None]) -> list[Connection]:
        """Give each waiting connection, oldest first, the instance ``choose`` picks (it
        sees the assignments made so far); stop at the first it cannot place. Returns the
        connections assigned, in order."""
        assigned = []
        while self.waiting:
            instance = choose()
            if instance is None:
                break
            conn = self.connections[self.waiting.popleft()]
            conn.instance = instance
            assigned.append(conn)
        return assigned

    def release(self, conn: Connection) -> None:
        """``conn`` no longer uses its instance (it ended, or looks for another)."""
        conn.instance = None
        conn.holding = False

    # -- what an instance carries ------------------------------------------------------------
    def on(self, instance: str) -> list[Connection]:
        return [c for c in self.connections.values() if c.instance == instance]

    def busy(self, instance: str, now: float) -> int:
        """Connections on ``instance`` that are busy (see :meth:`Connection.busy`)."""
        return sum(1 for c in self.on(instance) if c.busy(now, self.limits.busy_grace))

    def idle_since(self, instance: str, now: float) -> float | None:
        """When ``instance`` last carried a byte, if nothing is busy on it now."""
        conns = self.on(instance)
        if any(c.busy(now, self.limits.busy_grace) for c in conns):
            return None
        return max((c.last_active for c in conns), default=None)
