"""A small HTTP/1.1 server: asyncio protocol + httptools parser (uvloop when present).

Why not aiohttp or uvicorn: this keeps only what an inference endpoint needs
(keep-alive, pipelining in order, Content-Length and chunked bodies, Expect:
100-continue) with no per-request framework objects, and it controls the bounds
below directly. For speed it measured even with an aiohttp hello-world on uvloop
(docs/benchmarks.md, Serving), so the control, not raw speed, is the reason.

Bounds, so memory never grows with load: bodies over `max_body` get 413 (from
Content-Length, before the body is read) and headers over `max_header_bytes` get
431; then the connection closes after a lingering close. A plain close with the
client still sending would reset the connection, and a reset discards the answer
the client has not read yet: so the answer is written, the write side shut down,
and what still arrives is read and thrown away until the client closes, for at
most `_LINGER_S` seconds and `_LINGER_BYTES` bytes (nginx's lingering_close). A
connection stops being read while `_MAX_PIPELINED` requests wait, and
waits for the client to read before writing more; at most `max_connections`
are open; idle connections close after `idle_timeout_s`. A request's headers must be
complete within `header_timeout_s` of its first byte (408, then the close above): a
client dripping one byte at a time is never idle, so the idle timeout alone would let
it hold a connection for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from modelops_runtime.serve.errors import (
    REASONS,
    HeadersTooLarge,
    HeaderTimeout,
    InvalidInput,
    PayloadTooLarge,
    ServeError,
)

log = logging.getLogger(__name__)

_MAX_PIPELINED = 16
# Lingering close: total time, silence and bytes discarded before the socket is closed anyway.
_LINGER_S = 30.0
_LINGER_IDLE_S = 5.0
_LINGER_BYTES = 256 * 1024 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]
ErrorBody = Callable[[ServeError], Response]


def encode(response: Response, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
        f"content-type: {response.content_type}\r\ncontent-length: {len(response.body)}\r\n"
    )
    for name, value in response.headers:
        head += f"{name}: {value}\r\n"
    if not keep_alive:
        head += "connection: close\r\n"
    return (head + "\r\n").encode("latin-1") + response.body


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer `error`.

    httptools wraps it in HttpParserCallbackError; it comes back as __context__.
    """

    def __init__(self, error: ServeError) -> None:
        self.error = error


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[Request | Response] = deque()
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._broken = False
        self.last_active = self._loop.time()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._headers_since: float | None = None  # when the unfinished request's headers began
        self._body: list[bytes] = []
        self._body_size = 0
        self._linger_deadline: float | None = None
        self._linger_left = 0
        self._linger_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None or bool(self._pending)

    # -- transport events ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if len(self._server.connections) >= self._server.max_connections:
            self._transport.close()  # over the bound: refuse rather than queue without limit
            return
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._broken = True
        self._pending.clear()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        if self._broken:
            if self._linger_deadline is not None:
                self._discard(len(data))
            return
        self.last_active = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidInput("protocol upgrades are not supported"))
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._fail(cause.error if isinstance(cause, _Reject) else InvalidInput("malformed HTTP request"))
        except httptools.HttpParserError as error:
            self._fail(InvalidInput(f"malformed HTTP request: {error}"))

    def _fail(self, error: ServeError) -> None:
        """Answer after the requests already queued, then close: the stream is unusable."""
        self._broken = True
        assert self._transport is not None
        self._transport.pause_reading()
        self._pending.append(self._server.error_body(error))
        self._schedule()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close once the client has read the answer; see the module docstring."""
        self._linger_deadline = self._loop.time() + _LINGER_S
        self._linger_left = _LINGER_BYTES
        if transport.can_write_eof():
            transport.write_eof()  # FIN after the answer: the client sees it complete
        transport.resume_reading()
        self._linger_timer = self._loop.call_later(_LINGER_IDLE_S, transport.close)

    def _discard(self, n: int) -> None:
        assert self._transport is not None and self._linger_deadline is not None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._linger_left -= n
        remaining = self._linger_deadline - self._loop.time()
        if self._linger_left <= 0 or remaining <= 0:
            self._transport.close()
            return
        self._linger_timer = self._loop.call_later(
            min(_LINGER_IDLE_S, remaining), self._transport.close
        )

    # -- parser callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._headers_since = self._loop.time()
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._server.max_header_bytes:
            raise _Reject(HeadersTooLarge(self._server.max_header_bytes))

    def on_headers_complete(self) -> None:
        self._headers_since = None
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body:
            raise _Reject(PayloadTooLarge(self._server.max_body))
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.max_body:  # chunked bodies have no length up front
            raise _Reject(PayloadTooLarge(self._server.max_body))
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=url.path.decode("latin-1"),
            query=(url.query or b"").decode("latin-1"),
            headers=self._headers,
            body=self._body[0] if len(self._body) == 1 else b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
        )
        self._pending.append(request)
        if len(self._pending) >= _MAX_PIPELINED and self._transport and not self._reading_paused:
            self._transport.pause_reading()
            self._reading_paused = True
        self._schedule()

    # -- answering, in order -------------------------------------------------

    def _schedule(self) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._answer())

    async def _answer(self) -> None:
        transport = self._transport
        assert transport is not None
        try:
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, Response):
                    response, keep_alive = item, False
                else:
                    response = await self._server.dispatch(item)
                    keep_alive = item.keep_alive and not self._server.closing
                if transport.is_closing():
                    return
                if self._writable is not None:
                    await self._writable  # the client is not reading: do not buffer more
                transport.write(encode(response, keep_alive))
                self.last_active = self._loop.time()
                if isinstance(item, Response):
                    self._linger(transport)  # the rest of that request may still be arriving
                    return
                if not keep_alive:
                    transport.close()
                    return
                if self._reading_paused and len(self._pending) < _MAX_PIPELINED // 2:
                    self._reading_paused = False
                    transport.resume_reading()
        finally:
            self._task = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def expire_headers(self, now: float, header_timeout_s: float) -> None:
        """Answer 408 and close when a request's headers are overdue."""
        since = self._headers_since
        if since is None or self._broken or self._transport is None:
            return
        if now - since > header_timeout_s:
            self._headers_since = None
            self._fail(HeaderTimeout(header_timeout_s))

    def close_if_idle(self, now: float, idle_timeout_s: float) -> None:
        if self._transport is not None and not self.busy and now - self.last_active > idle_timeout_s:
            self._transport.close()


class HttpServer:
    """Serve `handler` over HTTP/1.1 with the bounds above."""

    def __init__(
        self,
        handler: Handler,
        error_body: ErrorBody,
        *,
        max_body: int,
        max_header_bytes: int = 64 * 1024,
        max_connections: int = 4096,
        idle_timeout_s: float = 75.0,
        header_timeout_s: float = 10.0,
    ) -> None:
        self.handler = handler
        self.error_body = error_body
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.header_timeout_s = header_timeout_s
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def dispatch(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except ServeError as error:
            return self.error_body(error)
        except Exception:  # a bug must cost one 500, not the connection or the loop
            log.exception("unhandled error answering %s %s", request.method, request.path)
            return self.error_body(ServeError("internal server error"))

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=2048
        )
        self._sweeper = loop.create_task(self._sweep())
        sockets = self._server.sockets or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(5.0, self.idle_timeout_s, self.header_timeout_s / 2))
            now = loop.time()
            for connection in list(self.connections):
                connection.expire_headers(now, self.header_timeout_s)
                connection.close_if_idle(now, self.idle_timeout_s)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop accepting, let busy connections finish (up to grace_s), close the rest."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(c.busy for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
