"""Connections from the gateway to its instances: opened quickly, and (for HTTP) kept
open between requests so that a keep-alive client's requests, each sent to whichever
instance is free, do not each pay for a new connection through QEMU's network."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import h11

# The guest's server closes a keep-alive connection after 5 s without a request; one idle
# for less than this is reused, so the gateway never sends on one the guest is closing.
REUSE_WITHIN = 2.0
IDLE_PER_INSTANCE = 64  # connections kept open to one instance between requests


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


@dataclass
class Upstream:
    """One HTTP connection to an instance, with its own h11 state (the gateway is the
    client there)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class Upstreams:
    """Idle HTTP connections to each instance, newest first."""

    idle: dict[str, list[Upstream]] = field(default_factory=dict)

    def take(self, instance: str) -> Upstream | None:
        """A connection to ``instance`` that can carry the next request, if one is kept."""
        kept = self.idle.get(instance)
        now = time.monotonic()
        while kept:
            up = kept.pop()
            if now - up.idle_since < REUSE_WITHIN and not up.reader.at_eof():
                up.reused = True
                return up
            up.close()
        return None

    def put(self, instance: str, up: Upstream) -> None:
        """``up`` finished an exchange cleanly: keep it for the next request, if both
        sides may go on."""
        if up.h11.our_state is not h11.DONE or up.h11.their_state is not h11.DONE:
            up.close()
            return
        try:
            up.h11.start_next_cycle()
        except h11.LocalProtocolError:
            up.close()
            return
        kept = self.idle.setdefault(instance, [])
        if len(kept) >= IDLE_PER_INSTANCE:
            kept.pop(0).close()
        up.idle_since = time.monotonic()
        up.reused = False
        kept.append(up)

    def drop(self, instance: str) -> None:
        """``instance`` is going: close what was kept open to it."""
        for up in self.idle.pop(instance, []):
            up.close()

    def drop_all(self) -> None:
        for instance in list(self.idle):
            self.drop(instance)
