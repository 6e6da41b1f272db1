"""WebSockets (RFC 6455) for ASGI apps served by the builtin server.

A request that asks to be upgraded becomes an ASGI ``websocket`` session. The framing
is wsproto's (a sans-IO implementation, the one uvicorn and hypercorn use), which krait's
runtime brings in its ``lib`` folder and imports only when the first upgrade arrives:
no cost at boot. Text and binary messages, fragmented ones reassembled, ping/pong,
close codes both ways. One message may be at most ``max_message`` bytes (more: the
session is closed with 1009); compression (permessage-deflate) is not offered, so a
small compressed frame can never inflate into a guest's memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys

from krait.guest.http import report_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from krait.guest.http import Limits, Request, Stream

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# wsproto (and h11) from the runtime's lib folder, last on the path, so that an app's own
# copies win. Only this server looks there: a server of the app's own (uvicorn) finds a
# WebSocket library where it would on the host, or none.
_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "lib")
if _LIB not in sys.path:
    sys.path.append(_LIB)


def is_upgrade(req: Request) -> bool:
    """A WebSocket opening handshake (GET, Upgrade: websocket, a key)."""
    upgrade = (req.header(b"upgrade") or b"").lower()
    connection = {t.strip() for t in (req.header(b"connection") or b"").lower().split(b",")}
    return (req.method == "GET" and upgrade == b"websocket" and b"upgrade" in connection
            and req.header(b"sec-websocket-key") is not None)


def _accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


class Session:
    """One WebSocket, between an ASGI app (``receive``/``send``) and a client."""

    def __init__(self, req: Request, stream: Stream, writer: asyncio.StreamWriter,
                 limits: Limits) -> None:
        self.req, self.stream, self.writer, self.limits = req, stream, writer, limits
        self.max_message = max(limits.max_body, 1 << 20)
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.state = "connecting"  # -> "open" -> "closed", or "denied"
        self.conn: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.connected = False
        self._parts: list[Any] = []  # of the message being received
        self._size = 0

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.state in ("closed", "denied") and self.inbox.empty():
            return {"type": "websocket.disconnect", "code": 1006}
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.state == "connecting":
            if kind == "websocket.accept":
                await self._accept(message)
            elif kind == "websocket.close":
                await self._deny()
            else:
                raise RuntimeError(f"{kind} before websocket.accept")
            return
        if self.state != "open":
            return  # the client went away: what the app still says goes nowhere
        from wsproto import events

        if kind == "websocket.send":
            if message.get("bytes") is not None:
                await self._write(events.BytesMessage(data=bytes(message["bytes"])))
            else:
                await self._write(events.TextMessage(data=str(message.get("text") or "")))
        elif kind == "websocket.close":
            await self.close(int(message.get("code") or 1000), message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind} on a WebSocket")

    async def _accept(self, message: dict[str, Any]) -> None:
        from wsproto.connection import Connection, ConnectionType

        headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-accept",
                    _accept_token(self.req.header(b"sec-websocket-key") or b""))]
        if message.get("subprotocol"):
            headers.append((b"sec-websocket-protocol", message["subprotocol"].encode()))
        headers += [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
        from krait.guest.http import response_head

        self.writer.write(response_head(101, headers))
        self.conn = Connection(ConnectionType.SERVER)
        self.state = "open"
        self.reader = asyncio.ensure_future(self._read())
        await self._drain()

    async def _deny(self) -> None:
        from krait.guest.http import error_response

        self.state = "denied"
        self.writer.write(error_response(403))
        await self._drain()

    async def close(self, code: int, reason: str = "") -> None:
        from wsproto import events

        if self.state == "open":
            await self._write(events.CloseConnection(code=code, reason=reason))
            self.state = "closed"

    async def _write(self, event: Any) -> None:
        from wsproto.utilities import LocalProtocolError

        try:
            self.writer.write(self.conn.send(event))
        except LocalProtocolError:
            self.state = "closed"  # closed by the other side meanwhile
            return
        await self._drain()

    async def _drain(self) -> None:
        from krait.guest.http import drain

        await drain(self.writer, self.limits)

    async def _read(self) -> None:
        """Frames from the client to ASGI messages, until a close or the end."""
        from krait.guest.http import Closed

        code = 1006  # no close frame: abnormal closure
        try:
            data = bytes(self.stream.buf)  # what came right behind the handshake
            self.stream.buf.clear()
            while True:
                if data:
                    self.conn.receive_data(data)
                    closed = await self._dispatch()
                    if closed is not None:
                        code = closed
                        return
                try:
                    await self.stream.fill(None, shared=True)
                except Closed:
                    return
                data = bytes(self.stream.buf)
                self.stream.buf.clear()
        except (ConnectionError, OSError):
            pass
        finally:
            self.state = "closed"
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})

    async def _dispatch(self) -> int | None:
        """Handle what the connection made of the bytes so far; the close code once the
        session is over."""
        from wsproto import events

        for event in self.conn.events():
            if isinstance(event, events.Message):
                self._parts.append(event.data)
                self._size += len(event.data)
                if self._size > self.max_message:
                    await self._write(events.CloseConnection(code=1009,
                                                             reason="message too big"))
                    return 1009
                if event.message_finished:
                    message: dict[str, Any] = (
                        {"text": "".join(self._parts)} if isinstance(event, events.TextMessage)
                        else {"bytes": b"".join(self._parts)})
                    self._parts, self._size = [], 0
                    self.inbox.put_nowait({"type": "websocket.receive", **message})
            elif isinstance(event, events.Ping):
                await self._write(event.response())
            elif isinstance(event, events.CloseConnection):
                if self.state == "open":
                    from wsproto.utilities import LocalProtocolError

                    try:  # the reply to the client's close (it may be our own echo)
                        self.writer.write(self.conn.send(event.response()))
                        await self._drain()
                    except LocalProtocolError:
                        pass
                return event.code
        return None


async def run_session(app: Any, scope: dict[str, Any], req: Request, stream: Stream,
                      writer: asyncio.StreamWriter, limits: Limits) -> None:
    """Serve one WebSocket with the ASGI ``app``; the connection ends with it."""
    session = Session(req, stream, writer, limits)
    protocols = req.header(b"sec-websocket-protocol") or b""
    scope = {**scope, "type": "websocket", "scheme": "ws",
             "subprotocols": [p.strip().decode("latin-1") for p in protocols.split(b",")
                              if p.strip()]}
    try:
        await app(scope, session.receive, session.send)
    except Exception:
        report_error()
        if session.state == "connecting":
            from krait.guest.http import error_response

            writer.write(error_response(500))
        else:
            await session.close(1011, "internal error")
    else:
        if session.state == "connecting":  # returned without a word: denied
            await session._deny()
        await session.close(1000)  # the app is done with it
    finally:
        if session.reader is not None:
            session.reader.cancel()
