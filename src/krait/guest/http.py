"""A small HTTP/1.1 server for ASGI and WSGI apps, on one asyncio loop.

Standard library only: it ships in every image that serves HTTP without a server
of the app's own. Keep-alive, Content-Length and chunked bodies, ASGI lifespan,
graceful shutdown on SIGTERM (stop accepting, let requests in flight finish).
WSGI apps run in a worker thread so a slow view does not stall the loop.
"""

from __future__ import annotations

import _queue
import asyncio
import contextlib
import io
import signal
import sys
import threading
import traceback
from collections.abc import Callable

# Not typing itself: importing it costs 0.14 s at every boot under emulation.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_HEADER = 64 * 1024  # request line and headers together
WSGI_THREADS = 5  # as many as asyncio's default executor has on one CPU
MAX_HEADERS = 100
REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently",
           302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}


class Limits:
    """What one client may make the server hold. Defaults as nginx and uvicorn have them."""

    def __init__(self, max_body: int = 1 << 20, body_budget: int = 64 << 20,
                 max_connections: int = 512, header_timeout: float = 10.0,
                 keep_alive_timeout: float = 5.0, read_timeout: float = 10.0,
                 write_timeout: float = 30.0) -> None:
        self.max_body = max_body  # one request's body; larger: 413
        self.body_budget = body_budget  # all bodies held at once; more: 503
        self.max_connections = max_connections  # open at once; more: 503
        self.header_timeout = header_timeout  # first byte to the end of the headers
        self.keep_alive_timeout = keep_alive_timeout  # waiting for the next request
        self.read_timeout = read_timeout  # a body that stops arriving
        self.write_timeout = write_timeout  # a client that stops reading its answer

    @classmethod
    def for_guest(cls, max_body: int) -> Limits:
        """A quarter of the guest's memory for request bodies, whatever the connections."""
        try:
            with open("/proc/meminfo") as f:
                total_kib = int(f.readline().split()[1])  # MemTotal comes first
        except (OSError, ValueError, IndexError):
            return cls(max_body)
        return cls(max_body, max(max_body, total_kib * 1024 // 4))


def unquote(text: str) -> str:
    """urllib.parse.unquote (%XX escapes decoded as UTF-8), without importing urllib: it
    costs some 35 ms at every boot under emulation."""
    if "%" not in text:
        return text
    head, *rest = text.split("%")
    out = bytearray(head.encode())
    for part in rest:
        code = part[:2]
        if len(code) == 2 and set(code.encode()) <= _HEX:
            out.append(int(code, 16))
            out += part[2:].encode()
        else:  # not an escape: kept as it is, as urllib keeps it
            out += b"%" + part.encode()
    return out.decode("utf-8", "replace")


class HttpError(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Closed(Exception):
    """The client went away (or stopped sending) mid-request."""


class Stream:
    """A client's bytes, with whatever was read ahead kept for the next request.

    One read is in flight at a time, shared by whoever waits for data: the request
    parser, or an ASGI app's ``receive()`` waiting to hear of a disconnect.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()
        self.eof = False
        self._read: asyncio.Task[bytes] | None = None

    async def fill(self, timeout: float | None, shared: bool = False) -> None:
        """Read what the client sent next into ``buf``; Closed at its end or after
        ``timeout``. A ``shared`` read (a disconnect watch, which an app may leave
        waiting) goes on in a task of its own that the next reader takes over; any other
        read, when no shared one is in flight, is a plain read under a timeout, which
        costs the loop far less (no task, no shield) on every request."""
        if self.eof:
            raise Closed
        if self._read is None and not shared:
            try:
                # A read cut short loses nothing: StreamReader keeps unread bytes.
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(65536)
            except TimeoutError:
                raise Closed from None
            except (ConnectionError, OSError):
                data = b""
            self._got(data)
            return
        if self._read is None:
            self._read = asyncio.ensure_future(self.reader.read(65536))
        try:
            data = await asyncio.wait_for(asyncio.shield(self._read), timeout)
        except TimeoutError:
            raise Closed from None
        except (ConnectionError, OSError):
            data = b""
        finally:
            if self._read is not None and self._read.done():
                self._read = None
        self._got(data)

    def _got(self, data: bytes) -> None:
        if not data:
            self.eof = True
            raise Closed
        self.buf += data

    async def read_until(self, sep: bytes, limit: int, deadline: float,
                         status: int = 431) -> bytes:
        loop = asyncio.get_running_loop()
        start = 0
        while (end := self.buf.find(sep, start)) < 0:
            if len(self.buf) > limit:
                raise HttpError(status, "too large")
            start = max(0, len(self.buf) - len(sep) + 1)
            await self.fill(max(0.0, deadline - loop.time()))
        if end > limit:
            raise HttpError(status, "too large")
        out = bytes(self.buf[:end])
        del self.buf[:end + len(sep)]
        return out

    async def read_exactly(self, n: int, timeout: float) -> bytes:
        while len(self.buf) < n:
            await self.fill(timeout)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def wait_closed(self) -> None:
        """Return when the client closes its side. Reads ahead (for the next request)
        no further than a request head; then waits without reading."""
        while not self.eof and len(self.buf) <= MAX_HEADER:
            try:
                await self.fill(None, shared=True)
            except Closed:
                return
        if not self.eof:
            await asyncio.Event().wait()

    def close(self) -> None:
        if self._read is not None:
            self._read.cancel()


class Request:
    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.method, self.target, self.version = method, target, version
        self.headers, self.body = headers, body
        self.held = 0  # bytes of the body budget this request holds until it is answered
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


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_head(head: bytes) -> Request:
    """The request line and headers (without the blank line that ends them). Strict
    where leniency lets a request mean two things (request smuggling)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN or not parts[1]:
        raise HttpError(400, "bad request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505 if version.startswith("HTTP/") else 400, "bad version")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not set(name) <= _TOKEN or b"\0" in value:
            raise HttpError(400, "bad header")
        headers.append((name.lower(), value.strip(b" \t")))
    return Request(method, target, version, headers, b"")


def body_length(req: Request) -> int | None:
    """The Content-Length, or None for a chunked body; 0 if there is no body."""
    lengths = {v for k, v in req.headers if k == b"content-length"}
    codings = [v.lower() for k, v in req.headers if k == b"transfer-encoding"]
    if codings:
        if codings != [b"chunked"] or lengths:
            raise HttpError(501 if not lengths else 400, "unsupported transfer-encoding")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise HttpError(400, "conflicting content-length")
    value = lengths.pop()
    if not value.isdigit() or len(value) > 18:
        raise HttpError(400, "bad content-length")
    return int(value)


async def read_request(stream: Stream, limits: Limits, budget: Budget,
                       writer: asyncio.StreamWriter, first: bool) -> Request | None:
    """The next request on a connection, with its body; None when the client is done
    (it closed, or sent nothing within the keep-alive timeout)."""
    loop = asyncio.get_running_loop()
    if not stream.buf:
        try:
            await stream.fill(limits.header_timeout if first else limits.keep_alive_timeout)
        except Closed:
            return None
    deadline = loop.time() + limits.header_timeout
    try:
        head = await stream.read_until(b"\r\n\r\n", MAX_HEADER, deadline)
    except Closed:
        raise HttpError(408, "headers not received in time") from None
    req = parse_head(head)
    length = body_length(req)
    if length is not None and length > limits.max_body:
        raise HttpError(413, "body too large")
    if length == 0:
        return req
    # Held before it is read, so that many clients sending at once cannot add up to more
    # than the budget; a chunked body, whose size is not known, holds the most it may be.
    held = limits.max_body if length is None else length
    budget.take(held)
    if (req.header(b"expect") or b"").lower() == b"100-continue" and req.version == "HTTP/1.1":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        req.body = await read_body(stream, length, limits)
    except BaseException:
        budget.give(held)
        raise
    req.held = held
    return req


async def read_body(stream: Stream, length: int | None, limits: Limits) -> bytes:
    """``length`` bytes, or a chunked body (``length`` None) of at most max_body."""
    loop = asyncio.get_running_loop()
    try:
        if length is not None:
            return await stream.read_exactly(length, limits.read_timeout)
        body = bytearray()
        while True:
            line = await stream.read_until(b"\r\n", 1024, loop.time() + limits.read_timeout,
                                           status=400)
            size = line.split(b";")[0].strip(b" \t")
            if not size or len(size) > 16 or not set(size) <= _HEX:
                raise HttpError(400, "bad chunk size")
            n = int(size, 16)
            if n == 0:
                break
            if len(body) + n > limits.max_body:
                raise HttpError(413, "body too large")
            body += await stream.read_exactly(n + 2, limits.read_timeout)
            if body[-2:] != b"\r\n":
                raise HttpError(400, "bad chunk")
            del body[-2:]
        while await stream.read_until(b"\r\n", MAX_HEADER,  # trailers: ignored
                                      loop.time() + limits.read_timeout, status=400):
            pass
        return bytes(body)
    except Closed:
        raise HttpError(408, "body not received in time") from None


class Budget:
    """Bytes of request bodies held at once, across connections (a body is held until
    its request is answered)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, n: int) -> None:
        if self.held + n > self.limit:
            raise HttpError(503, "too many request bodies at once")
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n


def report_error() -> None:
    """The traceback of an error the app did not handle; in a krait guest, with the hint
    for a module the image lacks."""
    try:
        from krait.guest import missing
    except ImportError:  # this file copied on its own (krait bench compare's payload)
        traceback.print_exc()
        return
    missing.print_unhandled()


def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}".encode()]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def error_response(status: int) -> bytes:
    body = f"{status} {REASONS.get(status, 'Error')}\n".encode()
    return response_head(status, [(b"content-type", b"text/plain"),
                                  (b"content-length", str(len(body)).encode()),
                                  (b"connection", b"close")]) + body


async def linger_close(stream: Stream, writer: asyncio.StreamWriter, seconds: float) -> None:
    """Close after an error answer, reading (and dropping) what the client still sends
    for a while: closing with unread bytes makes the kernel send a reset, which can
    destroy the answer before the client reads it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        await asyncio.wait_for(writer.drain(), seconds)
        if writer.can_write_eof():
            writer.write_eof()
        while loop.time() < deadline:
            stream.buf.clear()
            await stream.fill(deadline - loop.time())
    except (Closed, ConnectionError, OSError, TimeoutError):
        pass


if TYPE_CHECKING:
    from typing import TypeAlias

    Handler: TypeAlias = Callable[[Request, Stream, asyncio.StreamWriter], Any]


async def drain(writer: asyncio.StreamWriter, limits: Limits) -> None:
    # Nearly always the answer left in write() itself (the transport sends at once what
    # the socket takes): nothing to wait for, and no timer to set and cancel.
    transport = writer.transport
    if not transport.get_write_buffer_size() and not transport.is_closing():
        return
    try:
        await asyncio.wait_for(writer.drain(), limits.write_timeout)
    except TimeoutError:
        raise ConnectionError("the client does not read its answer") from None


async def serve(handler: Handler, port: int, ready: Callable[[], None],
                startup: Callable[[], Any] | None = None,
                shutdown: Callable[[], Any] | None = None,
                limits: Limits | None = None, host: str = "0.0.0.0") -> int:
    limits = limits or Limits()
    budget = Budget(limits.body_budget)
    stopping = asyncio.Event()
    active: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        stream = Stream(reader)
        if len(active) >= limits.max_connections:
            writer.write(error_response(503))
            await linger_close(stream, writer, 1.0)
            writer.close()
            return
        active.add(task)
        first = True
        try:
            while not stopping.is_set():
                try:
                    req = await read_request(stream, limits, budget, writer, first)
                except HttpError as e:
                    writer.write(error_response(e.status))
                    await linger_close(stream, writer, 5.0)
                    break
                if req is None:
                    break
                first = False
                try:
                    keep = await handler(req, stream, writer)
                    await drain(writer, limits)
                finally:
                    budget.give(req.held)
                if not (keep and req.keep_alive):
                    break
        except (ConnectionError, OSError, Closed):
            pass
        finally:
            active.discard(task)
            stream.close()
            writer.close()

    if startup:
        await startup()
    server = await asyncio.start_server(connection, host, port, reuse_address=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(RuntimeError, ValueError):  # not the main thread (tests)
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        ready()
        await stopping.wait()
    finally:
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


def asgi_handler(app: Any, port: int, limits: Limits) -> Handler:
    """Serve each request by calling the ASGI ``app``."""

    async def handle(req: Request, stream: Stream, writer: asyncio.StreamWriter) -> bool:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version.split("/")[1], "method": req.method,
            "scheme": "http", "path": unquote(req.raw_path), "raw_path": req.raw_path.encode(),
            "query_string": req.query.encode(), "root_path": "", "headers": req.headers,
            "server": ("0.0.0.0", port), "client": writer.get_extra_info("peername"),
        }
        if req.header(b"upgrade") is not None:
            from krait.guest import websocket  # the first upgrade pays for the import

            if websocket.is_upgrade(req):
                await websocket.run_session(app, scope, req, stream, writer, limits)
                return False
        sent_body = False
        done = False  # the response is complete
        started: dict[str, Any] = {}
        chunked = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            if not done:
                await stream.wait_closed()  # a long poll learns that its client left
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal chunked, done
            if done:
                return
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
                done = not more
                if req.method == "HEAD":
                    return
                if chunked:
                    if body:
                        writer.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        writer.write(b"0\r\n\r\n")
                else:
                    writer.write(body)
                await drain(writer, limits)  # a client that does not read holds no memory

        try:
            await app(scope, receive, send)
        except Exception:
            report_error()
            if not started:
                writer.write(error_response(500))
            return False
        return done

    return handle


def serve_asgi(app: Any, port: int, ready: Callable[[], None],
               limits: Limits | None = None, host: str = "0.0.0.0") -> int:
    limits = limits or Limits()
    lifespan = Lifespan(app)
    return asyncio.run(serve(asgi_handler(app, port, limits), port, ready, lifespan.startup,
                             lifespan.shutdown, limits, host))


# -- WSGI --------------------------------------------------------------------------------

class Workers:
    """The threads WSGI calls run in (a slow view does not stall the loop), up to
    WSGI_THREADS, started as calls need them. Each hands its answer to the loop with one
    call_soon_threadsafe; asyncio's run_in_executor wraps a call in two futures chained
    by callbacks, which under emulation cost a good part of a small view's time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, most: int = WSGI_THREADS) -> None:
        self._loop = loop
        self._most = most
        self._jobs: _queue.SimpleQueue[Any] = _queue.SimpleQueue()
        self._threads = 0
        self._waiting = 0  # calls handed over and not answered (counted on the loop only)

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._jobs.put((future, fn, args))
        self._waiting += 1
        if self._waiting > self._threads < self._most:
            self._threads += 1
            # Daemon: a view still running when the app is stopped does not hold it up.
            threading.Thread(target=self._work, name=f"krait-wsgi-{self._threads}",
                             daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            answer: tuple[Any, BaseException | None]
            try:
                answer = (fn(*args), None)
            except BaseException as e:  # the caller's to handle, as a call's own would be
                answer = (None, e)
            # A loop that is closed is a server that stopped: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._answer, future, *answer)
            del future, fn, args, answer

    def _answer(self, future: asyncio.Future[Any], result: Any,
                error: BaseException | None) -> None:
        self._waiting -= 1
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def wsgi_handler(app: Any, port: int) -> Handler:
    """Serve each request by calling the WSGI ``app`` in a worker thread."""

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

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                           ) -> Callable[[bytes], None]:
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

    workers: Workers | None = None

    async def handle(req: Request, stream: Stream, writer: asyncio.StreamWriter) -> bool:
        nonlocal workers
        if workers is None:
            workers = Workers(asyncio.get_running_loop())
        try:
            status, headers, body = await workers.run(call, req,
                                                      writer.get_extra_info("peername"))
        except Exception:
            report_error()
            writer.write(error_response(500))
            return False
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        writer.write(response_head(status, headers) + (b"" if req.method == "HEAD" else body))
        return True

    return handle


def serve_wsgi(app: Any, port: int, ready: Callable[[], None],
               limits: Limits | None = None, host: str = "0.0.0.0") -> int:
    return asyncio.run(serve(wsgi_handler(app, port), port, ready, limits=limits, host=host))
