"""The one local endpoint in front of the inference replicas: a small reverse proxy.

Round-robin over the replicas that are ready. A replica that refuses a connection
(stopped by a scale-down, or restarting) is skipped and the request is retried on
the next one, so scaling never fails a request. With no replica at all (scaled to
zero) requests wait, bounded, for one to come up: the waiting count is what wakes the
autoscaler.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import aiohttp
from aiohttp import web

_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)


class Balancer:
    """A reverse proxy whose backends can change at any time."""

    def __init__(self, host: str, port: int, wait_for_backend_seconds: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.wait_for_backend_seconds = wait_for_backend_seconds
        self.waiting = 0
        self.proxied = 0
        self.failed = 0
        self._backends: tuple[str, ...] = ()
        self._cycle: itertools.cycle[str] | None = None
        self._backend_ready = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backends(self) -> tuple[str, ...]:
        return self._backends

    def set_backends(self, backends: list[str]) -> None:
        ordered = tuple(sorted(set(backends)))
        if ordered == self._backends:
            return
        self._backends = ordered
        self._cycle = itertools.cycle(ordered) if ordered else None
        if ordered:
            self._backend_ready.set()
        else:
            self._backend_ready.clear()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=256),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the one picked, when asked for 0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _next_backend(self) -> str | None:
        if self._cycle is None:
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._backend_ready.wait(), self.wait_for_backend_seconds
                    )
            finally:
                self.waiting -= 1
        return next(self._cycle) if self._cycle is not None else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        attempts = max(1, len(self._backends))
        for _ in range(attempts + 1):
            backend = await self._next_backend()
            if backend is None:
                break
            try:
                async with self._session.request(
                    request.method, backend + request.path_qs, data=body, headers=headers
                ) as upstream:
                    payload = await upstream.read()
                    out_headers = {
                        k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    self.proxied += 1
                    return web.Response(status=upstream.status, body=payload, headers=out_headers)
            except aiohttp.ClientConnectionError:
                continue  # that replica is going away: try the next one
        self.failed += 1
        return web.json_response(
            {"error": "no inference replica is available"},
            status=503,
            headers={"Retry-After": "1"},
        )
