"""WebSockets on the guest's builtin server, in-process on loopback, spoken to by a real
client (the `websockets` package) and by hand where a client would not misbehave."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from krait.guest import http

from .test_guest_http import Receive, Scope, Send, run, serving

LIMITS = http.Limits(max_body=4096, header_timeout=2, keep_alive_timeout=2, read_timeout=2,
                     write_timeout=2)


class Chat:
    """Echoes text upper-cased and bytes reversed; "close" ends the session with 4001;
    /deny refuses the handshake, /crash fails after accepting."""

    def __init__(self) -> None:
        self.disconnects: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await receive()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/deny":
            await send({"type": "websocket.close", "code": 1008})
            return
        subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        if scope["path"] == "/crash":
            raise RuntimeError("the app failed mid-session")
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message["code"])
                return
            if message.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})


def test_text_binary_and_subprotocols_with_a_real_client() -> None:
    async def main() -> None:
        async with serving(Chat(), LIMITS) as port:
            url = f"ws://127.0.0.1:{port}/chat"
            async with connect(url, subprotocols=[Subprotocol("chat.v1")], compression=None) as ws:
                assert ws.subprotocol == "chat.v1"
                await ws.send("héllo")
                assert await ws.recv() == "HÉLLO"
                await ws.send(b"\x00\x01\x02")
                assert await ws.recv() == b"\x02\x01\x00"
                await ws.send(["frag", "mented"])  # one message in several frames
                assert await ws.recv() == "FRAGMENTED"
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, 2)
            # Plain HTTP still works on the same server.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await reader.read()).endswith(b"\r\n\r\nok")
            writer.close()

    run(main)


def test_close_codes_both_ways() -> None:
    async def main() -> None:
        app = Chat()
        async with serving(app, LIMITS) as port:
            async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.send("close")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")
            async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.close(code=4321, reason="bye")
            for _ in range(50):
                if app.disconnects:
                    break
                await asyncio.sleep(0.02)
            assert app.disconnects == [4321]

    run(main)


def test_a_denied_handshake_is_403_and_a_crash_is_1011() -> None:
    async def main() -> None:
        async with serving(Chat(), LIMITS) as port:
            with pytest.raises(InvalidStatus) as denied:
                async with connect(f"ws://127.0.0.1:{port}/deny", compression=None):
                    pass
            assert denied.value.response.status_code == 403
            async with connect(f"ws://127.0.0.1:{port}/crash", compression=None) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011

    run(main)


def test_a_message_over_the_limit_closes_with_1009() -> None:
    async def main() -> None:
        # Limit: max(max_body, 1 MiB). Sent in fragments, so no single frame is large.
        async with serving(Chat(), LIMITS) as port, connect(
                f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
            chunk = "x" * 65536
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send(iter([chunk] * 20))  # 1.25 MiB in one message
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    run(main)


def test_compression_is_not_offered_back() -> None:
    async def main() -> None:
        # The client offers permessage-deflate.
        async with serving(Chat(), LIMITS) as port, connect(f"ws://127.0.0.1:{port}/") as ws:
            assert ws.response is not None
            assert "sec-websocket-extensions" not in ws.response.headers
            await ws.send("still works")
            assert await ws.recv() == "STILL WORKS"

    run(main)


def test_a_client_that_vanishes_is_a_1006_disconnect() -> None:
    async def main() -> None:
        app = Chat()
        async with serving(app, LIMITS) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.transport.abort()
            for _ in range(50):
                if app.disconnects:
                    break
                await asyncio.sleep(0.02)
            assert app.disconnects == [1006]

    run(main)


