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


def test_the_jobs_of_one_run_share_its_ray_head(tmp_path: Path) -> None:
    import json
    import tempfile

    import yaml

    from modelops.local.rayhead import PROCESS, RayHead
    from modelops_runtime.datasets import write_digits
    from tests.runtime.train_helpers import digits_spec

    write_digits(tmp_path / "digits", shards=2, holdout_fraction=0.2, seed=0)
    marker = f"test-{time.time_ns()}"
    supervisor = Supervisor(tmp_path / "logs", marker)
    head = RayHead(supervisor, sys.executable, 2, Path(tempfile.mkdtemp(prefix="mo-ray-")))
    try:
        deadline = time.monotonic() + 180
        address = head.address()
        while address is None and time.monotonic() < deadline:
            time.sleep(0.5)
            address = head.address()
        assert address is not None, (tmp_path / "logs" / f"{PROCESS}.log").read_text()[-2000:]
        head_pid = supervisor.pids()[PROCESS]

        def train(name: str, workers: int) -> list[str]:
            spec = digits_spec(tmp_path / "digits", tmp_path / "store", resources={"workers": workers}, training={"epochs": 2})
            manifest = tmp_path / f"{name}.yaml"
            manifest.write_text(yaml.safe_dump({"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}))
            argv = [sys.executable, "-m", "modelops_runtime", "train", "--spec", str(manifest), "--ray-address", address]
            child = supervisor.start(name, argv, env=head.env())
            assert child.process.wait(timeout=600) == 0, child.log_path.read_text()[-3000:]
            return child.log_path.read_text().splitlines()

        for name in ("first", "second"):
            lines = train(name, 2)
            result = json.loads(lines[-1].removeprefix("MODELOPS_RESULT "))
            assert result["metrics"]["accuracy"] > 0.5  # ten classes: chance is 0.1
            # The user's view: progress and the result, none of Ray's routine lines.
            assert not [line for line in lines if "Failed to query Ray Train Controller" in line or "Reporting training result" in line]
        # Both jobs ran on the run's head: it is still the one process started first.
        assert supervisor.pids()[PROCESS] == head_pid and head.address() == address
    finally:
        supervisor.stop_all(grace_seconds=10)
    assert marked_processes(marker) == []
