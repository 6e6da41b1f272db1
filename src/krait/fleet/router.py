"""One port in front of several gateways, one per route of a routes file
(:mod:`krait.fleet.routes`): the router reads each request's head, finds its route by
host and path, and hands the request to that route's gateway, which leases an instance
of its own image as it would for its own clients. An unknown host or path is ``404``
from the router. A reload swaps routes without touching the others: a new route
starts, a removed or changed one is closed (its requests in flight finish) after its
replacement took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import h11

from krait.errors import ConfigError
from krait.fleet.gateway import Gateway
from krait.fleet.heads import (
    ClientSide,
    Refusal,
    Silent,
    answer_and_close,
    error_events,
    http_error,
)
from krait.fleet.http_proxy import exchange
from krait.fleet.metrics import Metrics, access_line
from krait.fleet.pool import Limits, Pool
from krait.fleet.routes import RouteSpec, find_route

log = logging.getLogger("krait.fleet")
NO_ROUTE = "-"  # the route label of what the router answers itself


class Router:
    def __init__(self, routes: list[RouteSpec], make: Callable[[RouteSpec], Gateway],
                 host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None,
                 metrics: Metrics | None = None, prewarm: bool = False) -> None:
        """``make(route)`` builds the gateway of a route (not listening: the router
        hands it requests) with the router's ``metrics``. With ``prewarm``, each route's
        snapshot is made before it takes requests (see Driver.prewarm)."""
        self.prewarm = prewarm
        self.initial = routes
        self.make = make
        self.host, self.port = host, port
        self.pool = Pool(limits or Limits())
        self.metrics = metrics or Metrics()
        self.routes: list[RouteSpec] = []
        self.gateways: dict[str, Gateway] = {}
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Router:
        for route in self.initial:
            await self._start(route)
        self.routes = list(self.initial)
        try:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                      reuse_address=True, backlog=1024)
        except OSError as e:
            await self.close()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {e.strerror}",
                              hint="pick another --port") from None
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(gw.close() for gw in self.gateways.values()),
                             *self._retiring, return_exceptions=True)
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients, timeout=5)

    async def _start(self, route: RouteSpec) -> Gateway:
        gw = self.make(route)
        if self.prewarm:
            try:
                await gw.driver.prewarm(gw.image, f"{gw.name}-prewarm")
            except Exception as e:  # its first request boots, and says why if it fails
                log.error("%s: could not prewarm: %s", gw.name, e)
        await gw.start()
        self.gateways[route.name] = gw
        return gw

    def _retire(self, gw: Gateway) -> None:
        task = asyncio.create_task(gw.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def reload(self, routes: list[RouteSpec]) -> dict[str, list[str]]:
        """Serve ``routes`` from now on; what was added, changed and removed."""
        old = {r.name: r for r in self.routes}
        new = {r.name: r for r in routes}
        added = [n for n in new if n not in old]
        changed = [n for n in new if n in old and new[n] != old[n]]
        removed = [n for n in old if n not in new]
        replaced: dict[str, Gateway] = {}
        for name in added + changed:
            previous = self.gateways.get(name)
            await self._start(new[name])  # ready before it takes requests
            if previous is not None:
                replaced[name] = previous
        self.routes = list(routes)  # from here on, requests find the new routes
        for gw in replaced.values():
            self._retire(gw)
        for name in removed:
            self._retire(self.gateways.pop(name))
        log.info("routes reloaded: %d added, %d changed, %d removed", len(added),
                 len(changed), len(removed))
        return {"added": added, "changed": changed, "removed": removed}

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else "?"
        admitted = self.pool.admit(client, time.monotonic())
        if isinstance(admitted, str):
            self.metrics.refused.labels(NO_ROUTE, "connections").inc()
            await answer_and_close(reader, writer, http_error(503, "too many connections"))
            return
        me = asyncio.current_task()
        if me is not None:
            self._clients.add(me)
        try:
            await self._serve(ClientSide(reader, writer, self.pool.limits), client)
        except (OSError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            self.pool.close(admitted)
            if me is not None:
                self._clients.discard(me)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, side: ClientSide, client: str) -> None:
        limits = self.pool.limits
        first = True
        while True:
            try:
                head = await side.read_head(limits.first_byte_timeout if first
                                            else limits.keepalive_timeout)
            except Silent:
                return
            except Refusal as e:
                self.metrics.requests.labels(NO_ROUTE, str(e.status)).inc()
                access_line(client, None, e.status, 0, 0.0)
                await answer_and_close(side.reader, side.writer,
                                       http_error(e.status, e.reason))
                return
            first = False
            host = next((v for n, v in head.headers if n == b"host"), None)
            route = find_route(self.routes, host, head.target)
            gw = self.gateways.get(route.name) if route is not None else None
            if gw is None:
                if not await self._not_found(side, client, head):
                    return
            else:
                conn = gw.pool.admit(client, gw.clock())
                if isinstance(conn, str):
                    gw.stats.refused += 1
                    await side.send(*error_events(503, "too many connections"))
                    return
                try:
                    if not await exchange(gw, conn, side, head) or gw.closing:
                        return
                finally:
                    gw.pool.close(conn)
            side.h11.start_next_cycle()

    async def _not_found(self, side: ClientSide, client: str, head: h11.Request) -> bool:
        """404 for a request no route takes; whether the connection may go on."""
        self.metrics.requests.labels(NO_ROUTE, "404").inc()
        self.metrics.refused.labels(NO_ROUTE, "no_route").inc()
        _, complete = await side.read_body(self.pool.limits.body_buffer)
        await side.send(*error_events(404, "no app is served at this host and path",
                                      close=not complete))
        access_line(client, head, 404, 0, 0.0)
        return complete and side.h11.our_state is h11.DONE
