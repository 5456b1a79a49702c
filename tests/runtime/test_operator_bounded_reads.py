"""The operator reads tenants' servers and URLs with a ceiling: real HTTP on loopback.

A server (or a URL) a tenant controls answers with more than the operator will hold:
the scrape leaves that server out, the admin call and the Prometheus query fail with
an error that says so, and the operator's memory never holds the whole answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


async def _serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_oversize_metrics_page_leaves_that_server_out_of_the_reading() -> None:
    async def scenario() -> dict[str, Any]:
        async def small(_: web.Request) -> web.Response:
            return web.Response(text=_metrics("digits"))

        async def huge(request: web.Request) -> web.StreamResponse:
            return await _streamed(request, HUGE >> 20)

        good_runner, good = await _serve({"/metrics": small})
        bad_runner, bad = await _serve({"/metrics": huge})
        try:
            async with aiohttp.ClientSession() as session:
                endpoints = [
                    Endpoint("good", f"127.0.0.1:{good}"),
                    Endpoint("hostile", f"127.0.0.1:{bad}"),
                ]
                return await scrape(session, endpoints, "digits")
        finally:
            await good_runner.cleanup()
            await bad_runner.cleanup()

    readings = _run(scenario())
    assert set(readings) == {"good"}, readings


def test_an_oversize_admin_answer_is_an_error_naming_the_ceiling() -> None:
    async def scenario() -> str:
        async def huge(request: web.Request) -> web.StreamResponse:
            return await _streamed(request, HUGE >> 20)

        runner, port = await _serve({"/v2/admin/routing": huge})
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(RuntimeError) as raised:
                    await routing.read_state(
                        session, Endpoint("hostile", f"127.0.0.1:{port}"), token="t"
                    )
                return str(raised.value)
        finally:
            await runner.cleanup()

    message = _run(scenario())
    assert "GET routing" in message and str(bounded.ANSWER_LIMIT) in message, message


def test_an_oversize_declared_length_is_refused_before_reading() -> None:
    async def scenario() -> str:
        async def declared(_: web.Request) -> web.Response:
            return web.Response(body=b"x" * (bounded.ANSWER_LIMIT + 10))

        runner, port = await _serve({"/v2/admin/routing": declared})
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(RuntimeError) as raised:
                    await routing.read_state(
                        session, Endpoint("hostile", f"127.0.0.1:{port}"), token="t"
                    )
                return str(raised.value)
        finally:
            await runner.cleanup()

    message = _run(scenario())
    assert f"answer of {bounded.ANSWER_LIMIT + 10} bytes" in message, message


def test_an_oversize_prometheus_answer_fails_the_query() -> None:
    async def scenario() -> None:
        async def huge(request: web.Request) -> web.StreamResponse:
            return await _streamed(request, HUGE >> 20)

        runner, port = await _serve({"/api/v1/query": huge})
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(bounded.TooLarge):
                    await query_prometheus(session, f"http://127.0.0.1:{port}", "digits", "", "ns")
        finally:
            await runner.cleanup()

    _run(scenario())


def test_a_prometheus_answer_that_is_not_an_object_is_a_prometheus_error() -> None:
    async def scenario() -> None:
        async def listing(_: web.Request) -> web.Response:
            return web.json_response([1, 2, 3])

        runner, port = await _serve({"/api/v1/query": listing})
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(PrometheusError):
                    await query_prometheus(session, f"http://127.0.0.1:{port}", "digits", "", "ns")
        finally:
            await runner.cleanup()

    _run(scenario())
