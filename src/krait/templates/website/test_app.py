"""Run with `python -m pytest`: the site, as its server asks for it (no VM)."""

import asyncio

from app import app


def get(path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": path, "headers": []},
                    receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_index():
    status, body = get("/")
    assert status == 200 and b"<h1>" in body


def test_nothing_outside_the_site():
    assert get("/../app.py")[0] == 404
