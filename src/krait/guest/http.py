"""A small HTTP/1.1 server for ASGI and WSGI apps, on one asyncio loop.

Standard library only: it ships in every image that serves HTTP without a server
of the app's own. Keep-alive, Content-Length and chunked bodies, ASGI lifespan,
graceful shutdown on SIGTERM (stop accepting, let requests in flight finish).
WSGI apps run in a worker thread so a slow view does not stall the loop.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import traceback
from collections.abc import Callable

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_HEADER = 64 * 1024
REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


def unquote(text: str) -> str:
    """urllib.parse.unquote (%XX escapes decoded as UTF-8), without importing urllib: it
    costs some 35 ms at every boot under emulation."""
    if "%" not in text:
        return text
    head, *rest = text.split("%")
    out = bytearray(head.encode())
    for part in rest:
        try:
            out += bytes.fromhex(part[:2]) if len(part) >= 2 else b""
            if len(part) < 2:
                raise ValueError
            out += part[2:].encode()
        except ValueError:
            out += b"%" + part.encode()
    return out.decode("utf-8", "replace")


class BadRequest(Exception):
    pass


class Request:
    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers, self.body = headers, body
        path, _, query = target.partition("?")
        self.raw_path, self.query = path, query

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def keep_alive(self) -> bool:
        conn = (self.header(b"connection") or b"").lower()
        return conn != b"close" if self.version == "HTTP/1.1" else conn == b"keep-alive"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("headers too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("bad request line") from None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("bad header")
        headers.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    req = Request(method, target, version, headers, b"")
    if (req.header(b"transfer-encoding") or b"").lower() == b"chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        req.body = bytes(body)
    elif length := req.header(b"content-length"):
        req.body = await reader.readexactly(int(length))
    return req


def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}".encode()]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


if TYPE_CHECKING:
    from typing import TypeAlias

    Handler: TypeAlias = Callable[[Request, asyncio.StreamWriter], Any]


async def serve(handler: Handler, port: int, ready: Callable[[], None],
                startup: Callable[[], Any] | None = None,
                shutdown: Callable[[], Any] | None = None) -> int:
    stopping = asyncio.Event()
    active: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        active.add(task)
        try:
            while not stopping.is_set():
                try:
                    req = await read_request(reader)
                except (BadRequest, ValueError):
                    writer.write(response_head(400, [(b"content-length", b"0"),
                                                     (b"connection", b"close")]))
                    break
                if req is None:
                    break
                keep = await handler(req, writer)
                await writer.drain()
                if not (keep and req.keep_alive):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            active.discard(task)
            writer.close()

    if startup:
        await startup()
    server = await asyncio.start_server(connection, "0.0.0.0", port, limit=MAX_HEADER,
                                        reuse_address=True)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    ready()
    await stopping.wait()
    server.close()
    if active:
        await asyncio.wait(active, timeout=10)
    if shutdown:
        await shutdown()
    return 0


# -- ASGI --------------------------------------------------------------------------------

class Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.supported = True
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.events: dict[str, asyncio.Event] = {}
        self.failed: str | None = None

    async def run(self) -> None:
        async def receive() -> dict[str, Any]:
            return await self.inbox.get()

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind.endswith(".failed"):
                self.failed = message.get("message", kind)
            self.events[kind.rsplit(".", 1)[0]].set()

        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                           receive, send)
        except BaseException:
            self.supported = False
        for ev in self.events.values():
            ev.set()

    async def _phase(self, phase: str) -> None:
        name = f"lifespan.{phase}"
        self.events[name] = asyncio.Event()
        await self.inbox.put({"type": name})
        await self.events[name].wait()
        if self.failed:
            raise RuntimeError(f"ASGI lifespan {phase} failed: {self.failed}")

    async def startup(self) -> None:
        self.task = asyncio.create_task(self.run())
        await self._phase("startup")

    async def shutdown(self) -> None:
        if self.supported and not self.task.done():
            await self._phase("shutdown")


def serve_asgi(app: Any, port: int, ready: Callable[[], None]) -> int:
    async def handle(req: Request, writer: asyncio.StreamWriter) -> bool:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version.split("/")[1], "method": req.method,
            "scheme": "http", "path": unquote(req.raw_path), "raw_path": req.raw_path.encode(),
            "query_string": req.query.encode(), "root_path": "", "headers": req.headers,
            "server": ("0.0.0.0", port), "client": writer.get_extra_info("peername"),
        }
        sent_body = False
        started: dict[str, Any] = {}
        chunked = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await asyncio.Event().wait()  # nothing more: wait until cancelled
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal chunked
            if message["type"] == "http.response.start":
                started.update(message)
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
                if not any(k == b"content-length" for k, _ in headers):
                    chunked = True
                    headers.append((b"transfer-encoding", b"chunked"))
                writer.write(response_head(message["status"], headers))
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                more = message.get("more_body", False)
                if req.method == "HEAD":
                    return
                if chunked:
                    if body:
                        writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        writer.write(b"0\r\n\r\n")
                else:
                    writer.write(body)

        try:
            await app(scope, receive, send)
        except Exception:
            traceback.print_exc()
            if not started:
                writer.write(response_head(500, [(b"content-length", b"0")]))
            return False
        return True

    lifespan = Lifespan(app)
    return asyncio.run(serve(handle, port, ready, lifespan.startup, lifespan.shutdown))


# -- WSGI --------------------------------------------------------------------------------

def serve_wsgi(app: Any, port: int, ready: Callable[[], None]) -> int:
    def call(req: Request, peer: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": req.method, "SCRIPT_NAME": "", "PATH_INFO": unquote(req.raw_path),
            "QUERY_STRING": req.query, "SERVER_NAME": "krait", "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": req.version, "REMOTE_ADDR": peer[0] if peer else "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(req.body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in req.headers:
            name = k.decode("latin-1").upper().replace("-", "_")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[name] = v.decode("latin-1")
            else:
                environ["HTTP_" + name] = v.decode("latin-1")
        state: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            state["status"] = int(status.split()[0])
            state["headers"] = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in headers]
            return lambda data: state.setdefault("early", []).append(data)

        result = app(environ, start_response)
        try:
            body = b"".join([*state.get("early", []), *result])
        finally:
            if hasattr(result, "close"):
                result.close()
        return state["status"], state["headers"], body

    async def handle(req: Request, writer: asyncio.StreamWriter) -> bool:
        loop = asyncio.get_running_loop()
        try:
            status, headers, body = await loop.run_in_executor(
                None, call, req, writer.get_extra_info("peername"))
        except Exception:
            traceback.print_exc()
            writer.write(response_head(500, [(b"content-length", b"0")]))
            return False
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        writer.write(response_head(status, headers) + (b"" if req.method == "HEAD" else body))
        return True

    return asyncio.run(serve(handle, port, ready))
