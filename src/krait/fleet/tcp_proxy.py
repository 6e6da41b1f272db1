"""The gateway for services that are not HTTP (protocol "tcp"): a connection's first
bytes take an instance, then bytes flow both ways for as long as the connection lives.

Connections, not requests, are balanced here: a keep-alive connection stays on the
instance it first got. An instance that closes a connection before sending anything
back gives it ``502``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from krait.fleet.heads import http_error
from krait.fleet.pool import Connection
from krait.fleet.upstream import connect_upstream

if TYPE_CHECKING:
    from krait.fleet.gateway import Gateway, Instance

log = logging.getLogger("krait.fleet")


async def serve_tcp(gw: Gateway, conn: Connection, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    limits = gw.pool.limits
    # Nothing is booted or connected for a client that sends nothing.
    try:
        first = await asyncio.wait_for(reader.read(65536), limits.first_byte_timeout)
    except TimeoutError:
        gw.stats.timed_out += 1
        return
    if not first:
        return
    gw.pool.touch(conn, gw.clock(), asked=True)
    for _attempt in range(3):
        lease = await gw.lease(conn)
        if isinstance(lease, str):
            gw.no_instance(lease)
            writer.write(http_error(503, lease))
            await asyncio.wait_for(writer.drain(), limits.write_timeout)
            return
        inst = lease.instance
        try:
            assert inst.handle is not None
            try:
                async with inst.connecting:
                    up_reader, up_writer = await connect_upstream(inst.handle.address)
            except OSError as e:
                # It died between the health check and now: look again.
                if not gw.driver.alive(inst.handle):
                    gw.lost(inst)
                    continue
                gw.stats.upstream_errors += 1
                log.warning("%s: %s does not accept connections: %s", gw.name, inst.id, e)
                writer.write(http_error(502, "the app does not accept connections"))
                await asyncio.wait_for(writer.drain(), limits.write_timeout)
                return
            up_writer.write(first)
            await _forward(gw, reader, writer, up_reader, up_writer, inst, conn)
            return
        finally:
            gw.release(inst, conn)


async def _forward(gw: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                   inst: Instance, conn: Connection) -> None:
    """Bytes both ways (the client's first bytes were sent already), each move
    noted; nothing either way for idle_timeout, or a side that does not take what is
    written for write_timeout, ends the connection."""
    limits = gw.pool.limits
    answered = False

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                   upstream: bool) -> None:
        nonlocal answered
        while True:
            data = await src.read(65536)
            if not data:
                break
            gw.pool.touch(conn, gw.clock(), asked=upstream)
            if not upstream:
                answered = True
            dst.write(data)
            await asyncio.wait_for(dst.drain(), limits.write_timeout)
        if upstream and dst.can_write_eof():
            dst.write_eof()

    def idle() -> bool:
        return gw.clock() - conn.last_active >= limits.idle_timeout

    to_up = asyncio.create_task(pump(reader, up_writer, True))
    to_client = asyncio.create_task(pump(up_reader, writer, False))
    try:
        while not to_client.done():
            await asyncio.wait([to_client], timeout=min(1.0, limits.idle_timeout))
            if idle():
                gw.stats.timed_out += 1
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
        gw.stats.upstream_errors += 1
        await asyncio.sleep(0.05)  # let a dying VM finish dying before we look
        dead = not gw.driver.alive(inst.handle)
        log.warning("%s: %s %s before answering", gw.name, inst.id,
                    "died" if dead else "closed the connection")
        writer.write(http_error(502, "the app ended the connection before answering"))
        await asyncio.wait_for(writer.drain(), limits.write_timeout)
