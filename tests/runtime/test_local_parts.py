"""Local mode's process supervisor and reverse proxy, with real processes and real HTTP."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from modelops.local.balancer import Balancer
from modelops.local.processes import Supervisor, marked_processes

pytestmark = pytest.mark.runtime

# A child that starts a grandchild in a session of its own, as Ray's workers do.
ESCAPING_CHILD = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""


def test_stop_all_leaves_no_process_even_outside_the_group(tmp_path: Path) -> None:
    marker = f"test-{time.time_ns()}"
    supervisor = Supervisor(tmp_path / "logs", marker)
    supervisor.start("a", [sys.executable, "-c", ESCAPING_CHILD])
    supervisor.start("b", [sys.executable, "-c", "import time; time.sleep(600)"])
    deadline = time.monotonic() + 30
    while len(marked_processes(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(marked_processes(marker)) == 3
    supervisor.stop_all(grace_seconds=5)
    assert marked_processes(marker) == []
    assert supervisor.children == {}


def test_reap_returns_the_exit_code(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", f"test-{time.time_ns()}")
    supervisor.start("quick", [sys.executable, "-c", "print('hello'); raise SystemExit(3)"])
    deadline = time.monotonic() + 30
    code = None
    while code is None and time.monotonic() < deadline:
        code = supervisor.reap("quick")
        time.sleep(0.05)
    assert code == 3
    assert (tmp_path / "logs" / "quick.log").read_text().strip() == "hello"


async def _backend(name: str) -> tuple[web.AppRunner, str]:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"backend": name, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def _scenario() -> None:
    first, first_url = await _backend("first")
    second, second_url = await _backend("second")
    balancer = Balancer("127.0.0.1", 0, wait_for_backend_seconds=5)
    await balancer.start()
    assert balancer.port != 0
    async with aiohttp.ClientSession() as session:

        async def ask() -> tuple[int, str]:
            async with session.get(balancer.url + "/v2/health/ready") as response:
                body = await response.json()
                return response.status, body.get("backend", "")

        balancer.set_backends([first_url, second_url])
        answers = [await ask() for _ in range(6)]
        assert {b for _, b in answers} == {"first", "second"}, "round robin over both"

        await first.cleanup()  # a replica goes away without warning
        answers = [await ask() for _ in range(6)]
        assert answers == [(200, "second")] * 6, "refused connections are retried elsewhere"

        balancer.set_backends([])  # scaled to zero: requests wait for a replica
        pending = asyncio.ensure_future(ask())
        await asyncio.sleep(0.3)
        assert balancer.waiting == 1
        balancer.set_backends([second_url])
        assert await pending == (200, "second")
        assert balancer.waiting == 0
    await balancer.stop()
    await second.cleanup()


def test_balancer_round_robin_retry_and_wait_for_a_replica() -> None:
    asyncio.run(_scenario())
