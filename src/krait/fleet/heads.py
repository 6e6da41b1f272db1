"""What a client sends, read by the gateway with h11 under its own limits, before any
instance is taken: a client that is slow, silent, oversized or malformed costs a
coroutine and a socket on the host, never a connection slot in a guest.

A refusal is an :class:`Refusal` (the status the gateway answers); a client that said
nothing is :class:`Silent` (closed without a word, as servers do with idle keep-alive
connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import h11

from krait.fleet.pool import Limits

TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 431: "Request Header Fields Too Large",
          502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Refusal(Exception):
    """The request is answered by the gateway with ``status`` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Silent(Exception):
    """The client closed, or sent nothing of a next request in time."""


def http_error(status: int, reason: str) -> bytes:
    """A whole answer with ``Connection: close``, for use outside h11 (before a request
    was read, or by the byte proxy). ``reason`` is one line a client may see."""
    body = f"krait: {reason}\n".encode()
    return (f"HTTP/1.1 {status} {TITLES.get(status, 'Error')}\r\n"
            "content-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def error_events(status: int, reason: str, close: bool = True
                 ) -> tuple[h11.Response, h11.Data, h11.EndOfMessage]:
    """The same answer as h11 events, for a connection whose request h11 has read."""
    body = f"krait: {reason}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return (h11.Response(status_code=status, headers=headers,
                         reason=TITLES.get(status, "Error").encode()),
            h11.Data(data=body), h11.EndOfMessage())


class ClientSide:
    """A client connection as h11 sees it (the gateway is the server), read with the
    gateway's time and size limits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: Limits) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)

    async def _receive(self, timeout: float) -> int:
        # asyncio.timeout, not wait_for: no task per read on the path of every request.
        async with asyncio.timeout(max(0.0, timeout)):
            data = await self.reader.read(65536)
        self.h11.receive_data(data)
        return len(data)

    async def read_head(self, first_timeout: float) -> h11.Request:
        """The next request's head. Its first byte must come within ``first_timeout``
        (else :class:`Silent`), the whole head within ``head_timeout`` of it (else
        408); a malformed head is 400, an oversized one 431."""
        held = len(self.h11.trailing_data[0])  # a pipelined request began already
        started = bool(held)
        deadline = time.monotonic() + self.limits.head_timeout
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                if self.h11.trailing_data[1]:
                    raise Silent() from None  # it left in the middle of a head
                status = 431 if e.error_status_hint == 431 else 400
                raise Refusal(status, "request head too large" if status == 431
                              else "malformed request") from None
            if isinstance(event, h11.Request):
                # h11 caps only a head still incomplete; one that came whole is
                # measured here: what was read, less what follows the head.
                if held - len(self.h11.trailing_data[0]) > self.limits.max_head:
                    raise Refusal(431, "request head too large")
                if len(event.headers) > self.limits.max_headers:
                    raise Refusal(431, "too many header lines")
                if event.method == b"CONNECT":
                    raise Refusal(405, "CONNECT is not served here")
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise Silent()
            assert event is h11.NEED_DATA, event
            if not started:
                try:
                    held += await self._receive(first_timeout)
                except TimeoutError:
                    raise Silent() from None
                if self.h11.trailing_data[1]:
                    raise Silent()  # it closed without starting a request
                started = True
                deadline = time.monotonic() + self.limits.head_timeout
                continue
            try:
                held += await self._receive(deadline - time.monotonic())
            except TimeoutError:
                raise Refusal(408, "request head not complete in time") from None

    async def read_body(self, until: int | None) -> tuple[list[h11.Data | h11.EndOfMessage],
                                                           bool]:
        """Body events of the current request, until its end or until more than
        ``until`` bytes are held (None: to the end); and whether the end came. A body
        that stops arriving for ``head_timeout`` is 408; a client that leaves, Silent."""
        events: list[h11.Data | h11.EndOfMessage] = []
        held = 0
        while until is None or held <= until:
            event = self.h11.next_event()
            if isinstance(event, h11.Data):
                events.append(event)
                held += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                events.append(event)
                return events, True
            elif isinstance(event, h11.ConnectionClosed):
                raise Silent()
            elif event is h11.NEED_DATA:
                if self.h11.trailing_data[1]:
                    raise Silent()
                try:
                    await self._receive(self.limits.head_timeout)
                except TimeoutError:
                    raise Refusal(408, "request body not sent in time") from None
            else:
                raise Refusal(400, "malformed request")
        return events, False

    def write(self, *events: h11.Event) -> None:
        """Events to the client, buffered until :meth:`flush`."""
        self.writer.write(b"".join(self.h11.send(e) or b"" for e in events))

    async def flush(self) -> None:
        """Wait until what was written is taken (at once if the socket took it all); a
        client that does not read for ``write_timeout`` is closed."""
        if self.writer.transport.get_write_buffer_size():
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()

    async def send(self, *events: h11.Event) -> None:
        self.write(*events)
        await self.flush()


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           answer: bytes) -> None:
    """Write a last answer and close. What the client still sends is read (briefly)
    before closing, or the kernel answers the unread bytes with a reset that can destroy
    the answer before the client reads it."""
    with contextlib.suppress(Exception):
        writer.write(answer)
        if writer.can_write_eof():
            writer.write_eof()
        await asyncio.wait_for(writer.drain(), 1.0)
        await asyncio.wait_for(reader.read(65536), 1.0)
    with contextlib.suppress(Exception):
        writer.close()
