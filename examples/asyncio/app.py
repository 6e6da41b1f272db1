"""A plain asyncio server, standard library only: a tiny HTTP key-value store.

GET /KEY answers the value (404 if unset), PUT /KEY stores the body, GET / lists keys.
One event loop, asyncio streams, keep-alive; SIGTERM stops it gracefully.
"""

import asyncio
import json
import os
import signal

STORE: dict[str, bytes] = {}


def response(status: str, body: bytes, ctype: str = "text/plain") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            key = path.lstrip("/")
            if method == "GET" and not key:
                out = response("200 OK", json.dumps({"keys": sorted(STORE), "pid": os.getpid()})
                               .encode(), "application/json")
            elif method == "GET":
                out = (response("200 OK", STORE[key]) if key in STORE
                       else response("404 Not Found", b"no such key\n"))
            elif method == "PUT" and key:
                STORE[key] = body
                out = response("201 Created", b"stored\n")
            else:
                out = response("405 Method Not Allowed", b"")
            writer.write(out)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(handle, "0.0.0.0", 8080)
    async with server:
        await stop.wait()


def main() -> int:
    asyncio.run(serve())
    return 0
