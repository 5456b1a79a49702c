"""The operator reads tenants' servers and URLs with a ceiling: real HTTP on loopback.

A server (or a URL) a tenant controls answers with more than the operator will hold:
the scrape leaves that server out, the admin call and the Prometheus query fail with
an error that says so, and the operator's memory never holds the whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from modelops.k8s.controller import bounded
from modelops.k8s.modeldeployment import routing
from modelops.k8s.modeldeployment.metrics_source import (
    Endpoint,
    PrometheusError,
    query_prometheus,
    scrape,
)

HUGE = 64 << 20  # what a hostile server would send; far past every ceiling


def _metrics(model: str) -> str:
    return (
        f'modelops_requests_total{{model="{model}",version="1",code="200"}} 5\n'
        "process_cpu_seconds_total 1.5\n"
    )


async def _streamed(request: web.Request, chunks: int) -> web.StreamResponse:
    """An endless-looking answer with no Content-Length: only reading it tells its size."""
    response = web.StreamResponse()
    await response.prepare(request)
    block = b"#" * (1 << 20)
    try:
        for _ in range(chunks):
            await response.write(block)
    except (ConnectionResetError, aiohttp.ClientConnectionError):
        pass  # the operator stopped reading: what the ceiling is for
    return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _serving(path: str, handler: Handler) -> AsyncIterator[str]:
    """A real HTTP server on loopback answering `path`; yields its host:port."""
    app = web.Application()
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _huge(request: web.Request) -> web.StreamResponse:
    return await _streamed(request, HUGE >> 20)


async def _small_metrics(_: web.Request) -> web.Response:
    return web.Response(text=_metrics("digits"))


async def _declared(_: web.Request) -> web.Response:
    return web.Response(body=b"x" * (bounded.ANSWER_LIMIT + 10))


async def _not_an_object(_: web.Request) -> web.Response:
    return web.json_response([1, 2, 3])


async def _admin_error(handler: Handler) -> str:
    """What reading the routing of a server answering with `handler` raises."""
    async with (
        _serving("/v2/admin/routing", handler) as address,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(RuntimeError) as raised:
            await routing.read_state(session, Endpoint("hostile", address), token="t")
        return str(raised.value)


async def _query(handler: Handler) -> None:
    async with _serving("/api/v1/query", handler) as address, aiohttp.ClientSession() as session:
        await query_prometheus(session, f"http://{address}", "digits", "", "ns")


def test_an_oversize_metrics_page_leaves_that_server_out_of_the_reading() -> None:
    async def scenario() -> dict[str, Any]:
        async with (
            _serving("/metrics", _small_metrics) as good,
            _serving("/metrics", _huge) as bad,
            aiohttp.ClientSession() as session,
        ):
            endpoints = [Endpoint("good", good), Endpoint("hostile", bad)]
            return await scrape(session, endpoints, "digits")

    readings = asyncio.run(scenario())
    assert set(readings) == {"good"}, readings


def test_an_oversize_admin_answer_is_an_error_naming_the_ceiling() -> None:
    message = asyncio.run(_admin_error(_huge))
    assert "GET routing" in message and str(bounded.ANSWER_LIMIT) in message, message


def test_an_oversize_declared_length_is_refused_before_reading() -> None:
    message = asyncio.run(_admin_error(_declared))
    assert f"answer of {bounded.ANSWER_LIMIT + 10} bytes" in message, message


def test_an_oversize_prometheus_answer_fails_the_query() -> None:
    with pytest.raises(bounded.TooLarge):
        asyncio.run(_query(_huge))


def test_a_prometheus_answer_that_is_not_an_object_is_a_prometheus_error() -> None:
    with pytest.raises(PrometheusError):
        asyncio.run(_query(_not_an_object))
