"""What `krait serve` tells an operator: Prometheus metrics on an admin listener of their
own (``--metrics HOST:PORT``, off by default), and one access-log line per request.

Counters of requests and refusals are kept as they happen; what the gateways already
count (boots, wakes, pauses, ...) and what they hold (instances by state, open
connections and WebSocket sessions) is read from them when scraped. Every series has a
``route`` label: the serve's name, or one route of a routes file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import h11
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from krait.errors import ConfigError
from krait.fleet.heads import ClientSide, Refusal, Silent, answer_and_close, http_error
from krait.fleet.pool import Limits

access_log = logging.getLogger("krait.fleet.access")
log = logging.getLogger("krait.fleet")

# Seconds from a request's head read to its answer's end: a resume is milliseconds, a
# wake a few tenths, a cold boot under TCG seconds.
BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EVENTS = ("boots", "wakes", "pauses", "resumes", "stops", "boot_failures", "deaths",
          "upstream_errors", "timed_out")


class Watched(Protocol):
    """What the collector reads of a gateway when scraped."""

    name: str

    def counts(self) -> dict[str, int]: ...

    def instance_states(self) -> dict[str, int]: ...

    def open_connections(self) -> int: ...

    def open_sessions(self) -> int: ...


class _FleetCollector:
    def __init__(self, gateways: list[Watched]) -> None:
        self.gateways = gateways

    def describe(self) -> Iterable[Metric]:
        return []  # collected fresh at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("krait_instance_events", "What happened to instances "
                                     "(boots, snapshot wakes, pauses, resumes, stops, "
                                     "failed boots, deaths, failed exchanges, timeouts)",
                                     labels=["route", "event"])
        states = GaugeMetricFamily("krait_instances", "Instances by state",
                                   labels=["route", "state"])
        conns = GaugeMetricFamily("krait_connections_open", "Client connections open",
                                  labels=["route"])
        sessions = GaugeMetricFamily("krait_sessions_open", "WebSocket (upgraded) "
                                     "connections open: each keeps its instance awake",
                                     labels=["route"])
        for gw in self.gateways:
            counts = gw.counts()
            for event in EVENTS:
                events.add_metric([gw.name, event], counts.get(event, 0))
            for state, n in sorted(gw.instance_states().items()):
                states.add_metric([gw.name, state], n)
            conns.add_metric([gw.name], gw.open_connections())
            sessions.add_metric([gw.name], gw.open_sessions())
        yield from (events, states, conns, sessions)


@dataclass
class Metrics:
    """One registry for a serve (every route of it); gateways report into it."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(
        auto_describe=False))
    gateways: list[Watched] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.requests = Counter("krait_requests", "HTTP requests answered, by status (the "
                                "gateway's own 400/404/408/431/502/503 included)",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("krait_request_seconds", "From a request's head to the "
                                 "end of its answer, by how its instance was had: cold "
                                 "(booted for it), wake (from a snapshot), resume (from "
                                 "pause), warm", ["route", "start"], buckets=BUCKETS,
                                 registry=self.registry)
        self.refused = Counter("krait_refused", "Connections and requests refused by the "
                               "gateway, by reason", ["route", "reason"],
                               registry=self.registry)
        self.registry.register(_FleetCollector(self.gateways))

    def watch(self, gateway: Watched) -> None:
        self.gateways.append(gateway)

    def unwatch(self, gateway: Watched) -> None:
        with contextlib.suppress(ValueError):
            self.gateways.remove(gateway)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def access_line(client: str, head: h11.Request | None, status: int, sent: int,
                seconds: float, instance: str = "", start: str = "") -> None:
    """One line per request, in the common log format and then what krait adds: the
    seconds it took, the instance that answered, and how it was had. A request the
    gateway refused before its head was read is "-"."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
    request = "-"
    if head is not None:
        line = head.method + b" " + head.target + b" HTTP/" + head.http_version
        # A target is the client's: quotes and control characters escaped, not logged.
        request = line.decode("latin-1").encode("unicode_escape").decode("ascii")
        request = request.replace('"', '\\"')
    access_log.info('%s - - [%s] "%s" %d %d %.4f %s %s', client, when, request, status,
                    sent, seconds, instance or "-", start or "-")


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) of an admin listener."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError(f"--metrics {value!r} is not HOST:PORT",
                          hint="e.g. --metrics 127.0.0.1:9090")
    return host.strip("[]"), int(port)


class MetricsListener:
    """``GET /metrics`` on an address of its own, as an async context manager."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> MetricsListener:
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                      reuse_address=True)
        except OSError as e:
            raise ConfigError(f"cannot listen on {self.host}:{self.port} for metrics: "
                              f"{e.strerror}", hint="pick another --metrics address"
                              ) from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._server is not None:
            self._server.close()

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        side = ClientSide(reader, writer, Limits())
        try:
            while True:
                head = await side.read_head(Limits().keepalive_timeout)
                await side.read_body(None)
                path = head.target.split(b"?", 1)[0]
                if head.method in (b"GET", b"HEAD") and path == b"/metrics":
                    body = self.metrics.text()
                    status = 200
                    ctype = CONTENT_TYPE_LATEST.encode()
                else:
                    body, status, ctype = b"krait: not found\n", 404, b"text/plain"
                headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
                events: list[h11.Event] = [h11.Response(status_code=status, headers=headers)]
                if head.method != b"HEAD":
                    events.append(h11.Data(data=body))
                await side.send(*events, h11.EndOfMessage())
                if side.h11.our_state is not h11.DONE or side.h11.their_state is not h11.DONE:
                    break
                side.h11.start_next_cycle()
        except Refusal as e:
            await answer_and_close(reader, writer, http_error(e.status, e.reason))
        except (Silent, OSError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
