"""The smallest useful krait app: an ASGI app with no dependencies."""

import os
import sys

GREETING = os.environ.get("GREETING", "Hello")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/":
        body = f"{GREETING} ({sys.version.split()[0]}, pid {os.getpid()})\n".encode()
        status = 200
    else:
        body, status = b"not found\n", 404
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
