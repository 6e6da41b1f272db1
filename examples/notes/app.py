"""Notes: a small REST service whose state lives outside the VM, in PostgreSQL.

WSGI, served by krait's built-in server; psycopg 3 with its binary wheel (a compiled
extension and the libpq bundled in psycopg_binary.libs/). The database is named at
boot: ``krait run notes.krait --env NOTES_DSN="host=10.0.2.2 port=5432 ..."`` (from
inside the guest, 10.0.2.2 is the host's loopback).

    POST   /notes        {"title": ..., "body": ...}  -> 201 the note
    GET    /notes                                     -> every note, oldest first
    GET    /notes/ID                                  -> the note, or 404
    DELETE /notes/ID                                  -> 204, or 404
"""

from __future__ import annotations

import json
import os
import re
import threading
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id      bigserial PRIMARY KEY,
    title   text NOT NULL,
    body    text NOT NULL DEFAULT '',
    created timestamptz NOT NULL DEFAULT now()
)"""
_lock = threading.Lock()
_conn: psycopg.Connection[Any] | None = None


def db() -> psycopg.Connection[Any]:
    """One connection, made on first use (never at import: the build imports this)."""
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["NOTES_DSN"], autocommit=True, connect_timeout=10)
        _conn.execute(SCHEMA)
    return _conn


def as_json(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "title": row[1], "body": row[2], "created": row[3].isoformat()}


def handle(method: str, path: str, body: bytes) -> tuple[int, Any]:
    if path == "/":
        return 200, {"service": "notes", "pid": os.getpid()}
    if not path.startswith("/notes"):
        return 404, {"error": "not found"}
    conn = db()
    if path == "/notes" and method == "GET":
        rows = conn.execute("SELECT id, title, body, created FROM notes ORDER BY id").fetchall()
        return 200, [as_json(r) for r in rows]
    if path == "/notes" and method == "POST":
        data = json.loads(body or b"{}")
        if not isinstance(data, dict) or not isinstance(data.get("title"), str):
            return 400, {"error": "expected {\"title\": ..., \"body\": ...}"}
        row = conn.execute("INSERT INTO notes (title, body) VALUES (%s, %s) "
                           "RETURNING id, title, body, created",
                           (data["title"], str(data.get("body", "")))).fetchone()
        return 201, as_json(row)
    if m := re.fullmatch(r"/notes/(\d+)", path):
        note_id = int(m.group(1))
        if method == "GET":
            row = conn.execute("SELECT id, title, body, created FROM notes WHERE id = %s",
                               (note_id,)).fetchone()
            return (200, as_json(row)) if row else (404, {"error": "no such note"})
        if method == "DELETE":
            cur = conn.execute("DELETE FROM notes WHERE id = %s", (note_id,))
            return (204, None) if cur.rowcount else (404, {"error": "no such note"})
        return 405, {"error": "method not allowed"}
    return 404, {"error": "not found"}


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    try:
        with _lock:
            status, payload = handle(environ["REQUEST_METHOD"], environ["PATH_INFO"], body)
    except (ValueError, json.JSONDecodeError):
        status, payload = 400, {"error": "bad JSON"}
    except psycopg.OperationalError as e:
        status, payload = 503, {"error": f"database unavailable: {e}"}
    data = b"" if payload is None else json.dumps(payload).encode()
    reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
              404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    start_response(f"{status} {reason[status]}", [("Content-Type", "application/json"),
                                                  ("Content-Length", str(len(data)))])
    return [data]
