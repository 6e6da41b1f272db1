"""Run with `python -m pytest`: the app, called as its server calls it (no VM)."""

import json

from app import app


def call(path):
    started = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                        lambda status, headers: started.append(status)))
    return started[0], json.loads(body)


def test_hello():
    assert call("/")[0] == "200 OK"


def test_not_found():
    assert call("/nope") == ("404 Not Found", {"error": "not found"})
