"""The loop's reach into real inference servers on loopback: scrape, totals, routing.

No control plane here: these are the parts of the serving loop that talk to the
servers, run against real `serve` processes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from modelops.k8s.modeldeployment.metrics_source import Endpoint, query_prometheus, scrape
from modelops.k8s.modeldeployment.routing import Split, apply_split
from modelops.k8s.modeldeployment.samples import Reading, Totals
from tests.cluster.modeldeployment_helpers import (
    MODEL,
    Load,
    input_rows,
    make_store,
    routing,
    servers,
    truth,
)
from tests.cluster.operator_fixture import wait_for
from tests.runtime.serve_helpers import ServerProcess, free_port

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    root = tmp_path_factory.mktemp("md-servers")
    with servers(make_store(root / "store"), 2, root) as started:
        yield started


def endpoints(live: list[ServerProcess]) -> list[Endpoint]:
    return [Endpoint(f"s{i}", f"127.0.0.1:{s.port}") for i, s in enumerate(live)]


async def _split(live: list[ServerProcess], split: Split) -> tuple[int, int]:
    async with aiohttp.ClientSession() as session:
        # These loopback servers run without a token file: their admin calls are open.
        result = await apply_split(session, endpoints(live), split, token="unused")
    assert result.complete, result.failed
    return len(result.changed), len(result.current)


async def _scrape(live: list[ServerProcess]) -> dict[str, Reading]:
    async with aiohttp.ClientSession() as session:
        return dict(await scrape(session, endpoints(live), MODEL))


def test_a_split_reaches_every_server_and_is_written_only_once(live: list[ServerProcess]) -> None:
    assert asyncio.run(_split(live, Split("1", "3", 50.0))) == (2, 2)
    assert asyncio.run(_split(live, Split("1", "3", 50.0))) == (0, 2)
    for server in live:
        assert routing(server)["routing"] == {
            "stable": "1", "candidate": "3", "weight": 50.0, "shadow": False,
        }  # fmt: skip
    rows = input_rows()
    with Load([s.url for s in live], rows, truth(live[0], rows)) as load:
        load.set_rate(100)
        time.sleep(3)
    share = load.versions["3"] / load.total
    assert 0.35 < share < 0.65, load.versions
    # Promotion is a hot swap: the candidate becomes the stable version, nothing fails.
    with Load([s.url for s in live], rows) as load:
        load.set_rate(100)
        time.sleep(1)
        asyncio.run(_split(live, Split("3")))
        time.sleep(1)
    assert load.failed == 0, load.statuses
    assert all(routing(s)["routing"]["stable"] == "3" for s in live)
    asyncio.run(_split(live, Split("1")))


def test_scraped_totals_give_rates_and_per_version_windows(live: list[ServerProcess]) -> None:
    asyncio.run(_split(live, Split("1", "2", 50.0)))
    totals = Totals()
    rows = input_rows()
    with Load([s.url for s in live], rows, truth(live[0], rows)) as load:
        load.set_rate(50)
        time.sleep(1)
        first = totals.add(time.time(), asyncio.run(_scrape(live)))
        time.sleep(4)
        last = totals.add(time.time(), asyncio.run(_scrape(live)))
    window = last.since(first)
    rate = window.requests / (last.time - first.time)
    assert 30 < rate < 70, rate
    stable, candidate = last.since(first, "1"), last.since(first, "2")
    assert stable.requests > 0 and candidate.requests > 0
    assert stable.errors == 0 and candidate.errors == 0
    assert candidate.feedback_rows > 0
    p95 = window.quantile(0.95)
    assert p95 is not None and p95 < 1.0
    # Versions 1 and 2 share weights: both are right on version 1's labels.
    assert totals.gauges.accuracy.get("2") == pytest.approx(1.0)
    asyncio.run(_split(live, Split("1")))


def test_shadow_comparisons_are_counted(live: list[ServerProcess]) -> None:
    asyncio.run(_split(live, Split("1", "3", 0.0, shadow=True)))
    totals = Totals()
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(40)
        time.sleep(1)
        first = totals.add(time.time(), asyncio.run(_scrape(live)))
        time.sleep(3)
        last = totals.add(time.time(), asyncio.run(_scrape(live)))
    shadow = last.since(first, "3")
    assert shadow.compared > 0
    assert shadow.agreement is not None and shadow.agreement < 0.9  # a different network
    assert load.versions["3"] == 0
    asyncio.run(_split(live, Split("1")))


@pytest.fixture(scope="module")
def prometheus(
    live: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping the servers every second."""
    root = tmp_path_factory.mktemp("prometheus")
    targets = [f"127.0.0.1:{s.port}" for s in live]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "serving",
                "static_configs": [{"targets": targets, "labels": {"namespace": "ml"}}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("prometheus ready", lambda: _ready(f"{url}/-/ready"), timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _query(url: str) -> dict[str, Reading]:
    async with aiohttp.ClientSession() as session:
        return await query_prometheus(session, url, MODEL, "", "ml")


def test_prometheus_source_reads_the_same_series(
    live: list[ServerProcess], prometheus: str
) -> None:
    asyncio.run(_split(live, Split("1")))
    totals = Totals()
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(40)
        wait_for(
            "both servers in Prometheus",
            lambda: len(asyncio.run(_query(prometheus))) == 2,
            timeout=60,
        )
        first = totals.add(time.time(), asyncio.run(_query(prometheus)))
        time.sleep(5)
        last = totals.add(time.time(), asyncio.run(_query(prometheus)))
    assert totals.endpoints == 2
    rate = last.since(first).requests / (last.time - first.time)
    assert 20 < rate < 60, rate
    assert set(last.versions) >= {"1"}
    assert totals.gauges.in_flight >= 0
