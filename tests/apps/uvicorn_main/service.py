"""An ASGI app that starts its own server, as `python service.py` would."""

import os

import uvicorn


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            phase = (await receive())["type"].rpartition(".")[2]
            await send({"type": f"lifespan.{phase}.complete"})
            if phase == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": f"uvicorn: {message.get('text')}"})
        return
    body = f"served by uvicorn {uvicorn.__version__} in process {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def main():
    uvicorn.run(app, host="0.0.0.0", port=8000, log_level="warning")


if __name__ == "__main__":
    main()
