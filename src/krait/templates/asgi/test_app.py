"""Run with `python -m pytest`: the app, called as its server calls it (no VM)."""

import asyncio
import json

from app import app


def call(path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []},
                    receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_hello():
    assert call("/")[0] == 200


def test_not_found():
    assert call("/nope") == (404, {"error": "not found"})
