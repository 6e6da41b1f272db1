"""The self-hosting website: a static site baked into the image, served over HTTPS.

Standard library only: asyncio streams with Python's ssl (TLS 1.3 minimum) on 8443,
and plain HTTP on 8080 that only redirects to HTTPS. The site is read into memory
once at start (it is in the read-only image anyway) with an ETag per file, so a
request can only ever name a file that is in that table: no path escapes the site.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import posixpath
import signal
import ssl
from pathlib import Path
from urllib.parse import unquote, urlsplit

SITE = Path(__file__).resolve().parent / "site"
HTTP_PORT, HTTPS_PORT = 8080, 8443
# The port browsers should use for HTTPS (differs from 8443 behind a port forward).
PUBLIC_HTTPS_PORT = int(os.environ.get("PUBLIC_HTTPS_PORT", HTTPS_PORT))
REASONS = {200: "OK", 301: "Moved Permanently", 304: "Not Modified", 400: "Bad Request",
           404: "Not Found", 405: "Method Not Allowed"}
SECURITY = [("Strict-Transport-Security", "max-age=31536000"),
            ("X-Content-Type-Options", "nosniff")]


class Page:
    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            ctype += "; charset=utf-8"
        self.content_type = ctype


def load_site(root: Path = SITE) -> dict[str, Page]:
    """URL path -> page; a folder's index.html answers for the folder."""
    pages = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            url = "/" + path.relative_to(root).as_posix()
            pages[url] = Page(path)
            if path.name == "index.html":
                pages[url[: -len("index.html")]] = pages[url]
    return pages


def resolve(target: str, pages: dict[str, Page]) -> tuple[int, str]:
    """(status, url path) for a request target; 404 for anything not in the table."""
    path = unquote(urlsplit(target).path)
    if not path.startswith("/") or "\0" in path or "\\" in path:
        return 400, path
    clean = posixpath.normpath(path) + ("/" if path.endswith("/") and path != "/" else "")
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean in pages:
        return 200, clean
    if clean + "/" in pages:
        return 301, clean + "/"
    return 404, clean


def head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def serve_https(pages: dict[str, Page]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (req := await read_request(reader)) is not None:
                method, target, headers = req
                if method not in ("GET", "HEAD"):
                    writer.write(head(405, [("Allow", "GET, HEAD"), ("Content-Length", "0")]))
                    break
                status, path = resolve(target, pages)
                if status == 200:
                    page = pages[path]
                    common = [("ETag", page.etag), ("Cache-Control", "no-cache"), *SECURITY]
                    if headers.get("if-none-match") in (page.etag, "*"):
                        writer.write(head(304, common))
                    else:
                        writer.write(head(200, [("Content-Type", page.content_type),
                                                ("Content-Length", str(len(page.body))),
                                                *common]))
                        if method == "GET":
                            writer.write(page.body)
                elif status == 301:
                    writer.write(head(301, [("Location", path), ("Content-Length", "0")]))
                else:
                    body = b"not found\n" if status == 404 else b"bad request\n"
                    writer.write(head(status, [("Content-Type", "text/plain; charset=utf-8"),
                                               ("Content-Length", str(len(body)))]))
                    if method == "GET":
                        writer.write(body)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return handle


async def redirect_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        req = await read_request(reader)
        if req is not None:
            _, target, headers = req
            host = headers.get("host", "localhost").rsplit(":", 1)[0]
            port = "" if PUBLIC_HTTPS_PORT == 443 else f":{PUBLIC_HTTPS_PORT}"
            location = f"https://{host}{port}{urlsplit(target).path or '/'}"
            writer.write(head(301, [("Location", location), ("Content-Length", "0"),
                                    ("Connection", "close")]))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(os.environ["KRAIT_TLS_CERT"], os.environ["KRAIT_TLS_KEY"])
    return context


async def serve() -> None:
    pages = load_site()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    https = await asyncio.start_server(serve_https(pages), "0.0.0.0", HTTPS_PORT,
                                       ssl=tls_context())
    http = await asyncio.start_server(redirect_http, "0.0.0.0", HTTP_PORT)
    print(f"website: {len(pages)} paths on https :{HTTPS_PORT}, redirects on http :{HTTP_PORT}",
          flush=True)
    async with https, http:
        await stop.wait()


def main() -> int:
    asyncio.run(serve())
    return 0
