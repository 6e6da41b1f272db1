"""The gateway for HTTP services (protocol "http"): each request read whole (its head,
and a small body) by the gateway before it takes an instance, then sent to whichever
instance is free; its answer streamed back as it comes.

Requests, not connections, are balanced: a keep-alive client's next request may go to
another instance, so one client cannot pin a busy one. An answer ``101 Switching
Protocols`` (a WebSocket) turns the connection into a tunnel that holds its instance
until it closes, however quiet it is: a WebSocket's liveness is its own ping/pong. A
streamed answer (SSE) holds its instance the same way until it ends.

Both sides are parsed by h11; hop-by-hop headers are not passed on. What the gateway
answers itself: 400 (malformed), 405 (CONNECT), 408 (a head or body too slow), 431 (a
head too large), 502 (the instance failed the request), 503 (no instance), 504 (no
answer head in ``idle_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11

from krait.fleet.heads import (
    ClientSide,
    Refusal,
    Silent,
    answer_and_close,
    error_events,
    http_error,
)
from krait.fleet.metrics import access_line
from krait.fleet.pool import Connection
from krait.fleet.upstream import Upstream, connect_upstream

if TYPE_CHECKING:
    from krait.fleet.gateway import Gateway, Instance, Lease

log = logging.getLogger("krait.fleet")

# Not passed on: they describe one connection, not the request (RFC 9110 7.6.1). The
# framing (content-length, transfer-encoding) is h11's on each side.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade"})

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class InstanceGone(Exception):
    """The instance would not take a connection and is dead: find another."""


class Cut(Exception):
    """The exchange failed after the answer began: the client connection is closed."""


@dataclass
class Outcome:
    """What the access log and the metrics say of one request."""

    status: int = 0
    sent: int = 0
    instance: str = ""
    start: str = ""


def upstream_request(req: h11.Request, host: bytes) -> h11.Request:
    headers = [(n, v) for n, v in req.headers
               if n not in HOP_BY_HOP or n == b"transfer-encoding"]
    upgrade = [v for n, v in req.headers if n == b"upgrade"]
    if upgrade:
        headers += [(b"connection", b"upgrade"), (b"upgrade", upgrade[0])]
    if not any(n == b"host" for n, _ in headers):  # an HTTP/1.0 client's
        headers.append((b"host", host))
    return h11.Request(method=req.method, target=req.target, headers=headers)


def client_response(resp: h11.Response) -> h11.Response:
    return h11.Response(status_code=resp.status_code, reason=resp.reason,
                        headers=[(n, v) for n, v in resp.headers if n not in HOP_BY_HOP])


async def serve_http(gw: Gateway, conn: Connection, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """Requests on one client connection, one after the other, until it closes."""
    limits = gw.pool.limits
    side = ClientSide(reader, writer, limits)
    first = True
    while True:
        try:
            head = await side.read_head(limits.first_byte_timeout if first
                                        else limits.keepalive_timeout)
        except Silent:
            if first and not side.h11.trailing_data[1]:
                gw.stats.timed_out += 1  # said nothing at all: booted nothing
            return
        except Refusal as e:
            gw.refused_request(conn, e)
            await answer_and_close(reader, writer, http_error(e.status, e.reason))
            return
        first = False
        if not await exchange(gw, conn, side, head) or gw.closing:
            return  # (closing: the request in flight was let finish; no next one)
        side.h11.start_next_cycle()


async def exchange(gw: Gateway, conn: Connection, side: ClientSide,
                   head: h11.Request) -> bool:
    """One request and its answer; whether the connection may carry another."""
    started = time.monotonic()
    out = Outcome()
    gw.pool.touch(conn, gw.clock(), asked=True)
    try:
        # Small bodies are read whole before an instance is taken (a slow upload holds
        # none); a large one, or one the client sends only after 100 Continue, streams.
        body: list[h11.Data | h11.EndOfMessage] = []
        complete = False
        if not side.h11.they_are_waiting_for_100_continue:
            body, complete = await side.read_body(gw.pool.limits.body_buffer)
        for _attempt in range(3):
            lease = await gw.lease(conn)
            if isinstance(lease, str):
                gw.no_instance(lease)
                out.status = 503
                await side.send(*error_events(503, lease))
                return False
            conn.holding = True
            out.instance, out.start = lease.instance.id, lease.how
            try:
                return await _through(gw, conn, side, head, body, complete, lease, out)
            except InstanceGone:
                continue
            finally:
                gw.release(lease.instance, conn)
        out.status = 503
        await side.send(*error_events(503, "no instance could be had"))
        return False
    except Refusal as e:  # a body too slow, or malformed (counted and logged below)
        gw.count_refusal(e)
        out.status = e.status
        await answer_and_close(side.reader, side.writer, http_error(e.status, e.reason))
        return False
    except (Silent, Cut, OSError, TimeoutError, h11.ProtocolError):
        return False
    finally:
        seconds = time.monotonic() - started
        if out.status:
            gw.metrics.requests.labels(gw.name, str(out.status)).inc()
            if out.start:
                gw.metrics.latency.labels(gw.name, out.start).observe(seconds)
        access_line(conn.client, head, out.status, out.sent, seconds, out.instance,
                    out.start)


async def _through(gw: Gateway, conn: Connection, side: ClientSide, head: h11.Request,
                   body: list[h11.Data | h11.EndOfMessage], complete: bool, lease: Lease,
                   out: Outcome) -> bool:
    """The request to ``lease``'s instance and its answer back. A kept connection that
    the guest closed before answering is retried on a new one, if the whole request was
    held here (nothing of it is lost)."""
    inst = lease.instance
    assert inst.handle is not None
    limits = gw.pool.limits
    host = f"{gw.host}:{gw.port}".encode()
    retried = False
    while True:
        up = gw.upstreams.take(inst.id)
        if up is None:
            try:
                async with inst.connecting:
                    up = Upstream(*await connect_upstream(inst.handle.address))
            except OSError as e:
                if retried:
                    return await _bad_gateway(gw, side, inst, out)
                if not gw.driver.alive(inst.handle):
                    gw.lost(inst)
                    raise InstanceGone() from None  # nothing was sent: another may take it
                gw.stats.upstream_errors += 1
                log.warning("%s: %s does not accept connections: %s", gw.name, inst.id, e)
                out.status = 502
                await side.send(*error_events(502, "the app does not accept connections"))
                return False
        pump: asyncio.Task[None] | None = None
        try:
            up.writer.write(b"".join(up.h11.send(e) or b"" for e in
                                     (upstream_request(head, host), *body)))
            if not complete:
                pump = asyncio.create_task(_pump_body(side, up, limits.write_timeout))
            answered = await _answer(gw, conn, side, up, out)
        except _UpstreamFailed:
            up.close()
            if out.status:
                raise Cut() from None  # the answer had begun: nothing to say but close
            # A kept connection the guest closed as the request went out (its keep-alive
            # timer) is the one failure where the request surely was not served: sent
            # again on a new connection, once, if it may be (idempotent, held whole).
            if (up.reused and complete and not retried and head.method in IDEMPOTENT
                    and gw.driver.alive(inst.handle)):
                retried = True
                continue
            return await _bad_gateway(gw, side, inst, out)
        except BaseException:
            up.close()
            raise
        finally:
            if pump is not None:  # (its failure, a client gone mid-body, is seen here)
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
        if answered == "tunnel":
            return await _tunnel(gw, conn, side, up)
        gw.upstreams.put(inst.id, up)
        return side.h11.our_state is h11.DONE and side.h11.their_state is h11.DONE


class _UpstreamFailed(Exception):
    """The instance closed, reset, or sent what is not HTTP."""


async def _answer(gw: Gateway, conn: Connection, side: ClientSide, up: Upstream,
                  out: Outcome) -> str:
    """The instance's answer to the client as it comes: "done", or "tunnel" after a
    101. What one read from the instance holds is written to the client at once (a
    small answer's head, body and end in one write). No answer head within
    ``idle_timeout``: 504."""
    limits = gw.pool.limits
    while True:
        try:
            event = up.h11.next_event()
        except h11.RemoteProtocolError as e:
            raise _UpstreamFailed() from e
        if event is h11.NEED_DATA:
            await side.flush()
            try:
                async with asyncio.timeout(None if out.status else limits.idle_timeout):
                    data = await up.reader.read(65536)
            except TimeoutError:
                out.status = 504
                gw.stats.upstream_errors += 1
                await side.send(*error_events(504, "the app did not answer in time"))
                return "done"
            except OSError as e:
                raise _UpstreamFailed() from e
            up.h11.receive_data(data)
        elif isinstance(event, h11.InformationalResponse):
            side.write(event)  # 100 Continue, 103 Early Hints, 101
            if event.status_code == 101:
                await side.flush()
                out.status = 101
                return "tunnel"
        elif isinstance(event, h11.Response):
            out.status = event.status_code
            side.write(client_response(event))
        elif isinstance(event, h11.Data):
            out.sent += len(event.data)
            side.write(event)
            gw.pool.touch(conn, gw.clock(), asked=False)
        elif isinstance(event, h11.EndOfMessage):
            side.write(h11.EndOfMessage())  # trailers are the connection's
            await side.flush()
            gw.pool.touch(conn, gw.clock(), asked=False)
            return "done"
        else:  # ConnectionClosed before the end, or PAUSED
            raise _UpstreamFailed()


async def _pump_body(side: ClientSide, up: Upstream, write_timeout: float) -> None:
    """The rest of a request body to the instance, as it arrives."""
    while True:
        events, done = await side.read_body(0)
        up.writer.write(b"".join(up.h11.send(e) or b"" for e in events))
        await asyncio.wait_for(up.writer.drain(), write_timeout)
        if done:
            return


async def _bad_gateway(gw: Gateway, side: ClientSide, inst: Instance, out: Outcome) -> bool:
    assert inst.handle is not None
    gw.stats.upstream_errors += 1
    await asyncio.sleep(0.05)  # let a dying VM finish dying before we look
    dead = not gw.driver.alive(inst.handle)
    log.warning("%s: %s %s before answering", gw.name, inst.id,
                "died" if dead else "closed the connection")
    if dead:
        gw.lost(inst)
    out.status = 502
    await side.send(*error_events(502, "the app ended the connection before answering"))
    return False


async def _tunnel(gw: Gateway, conn: Connection, side: ClientSide, up: Upstream) -> bool:
    """After a 101: bytes both ways until either side closes. The connection stays
    busy (its instance neither pauses nor stops) for as long as it is open."""
    client_rest, up_rest = side.h11.trailing_data[0], up.h11.trailing_data[0]
    gw.sessions += 1
    try:
        if up_rest:
            side.writer.write(up_rest)
        if client_rest:
            up.writer.write(client_rest)
        await splice(side.reader, side.writer, up.reader, up.writer,
                     gw.pool.limits.write_timeout,
                     lambda asked: gw.pool.touch(conn, gw.clock(), asked=asked))
    finally:
        gw.sessions -= 1
        up.close()
    return False


async def splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                 b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
                 write_timeout: float, moved: Callable[[bool], None]) -> None:
    """Bytes a -> b and b -> a until both ends closed (after one does, the other has
    ``write_timeout`` to follow); a side that does not take what is written for
    ``write_timeout`` ends it. ``moved(from_a)`` is called for each chunk."""

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_a: bool) -> None:
        while data := await src.read(65536):
            moved(from_a)
            dst.write(data)
            await asyncio.wait_for(dst.drain(), write_timeout)
        if dst.can_write_eof():
            dst.write_eof()

    tasks = [asyncio.create_task(pump(a_reader, b_writer, True)),
             asyncio.create_task(pump(b_reader, a_writer, False))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not any(t.exception() for t in done if not t.cancelled()):
            await asyncio.wait(pending, timeout=write_timeout)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
