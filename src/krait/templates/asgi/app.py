"""An ASGI app, served in the VM by krait's builtin server (or uvicorn: server = "uvicorn")."""

import json
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/":
        status, body = 200, {"hello": os.environ.get("GREETING", "world")}
    else:
        status, body = 404, {"error": "not found"}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
