"""Canary split, shadow comparison, hot swap under load and the admin token, against
one real server process started with the canary flags and driven by the admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson
import pytest

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from modelops_runtime.serve.config import parse_config
from modelops_runtime.serve.routing import Routing
from tests.runtime.serve_helpers import (
    N_FEATURES,
    ServerProcess,
    infer_body,
    make_store,
    metric_values,
    post_all,
)

pytestmark = pytest.mark.runtime


TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One process for the module (starting one costs seconds): each test sets the routing it needs."""
    args = ["--store", store, "--model", "m", "--version", "1", "--candidate", "2", "--canary-weight", "20",
            "--max-wait-ms", "2"]
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(args, log, env={"MODELOPS_ADMIN_TOKEN": TOKEN}) as process:
        yield process


def _route(server: ServerProcess, **routing: object) -> dict[str, Any]:
    reply = httpx.put(f"{server.url}/v2/admin/routing", json=routing, headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text
    state: dict[str, Any] = reply.json()
    return state


def test_canary_split_follows_its_weight(server: ServerProcess) -> None:
    state = httpx.get(f"{server.url}/v2/admin/routing", headers=AUTH).json()
    if state["routing"] != {"stable": "1", "candidate": "2", "weight": 20.0, "shadow": False}:
        _route(server, stable="1", candidate="2", weight=20, shadow=False)  # as the flags set it
    rows = np.random.default_rng(0).random((1, N_FEATURES), dtype=np.float32)
    replies = post_all(f"{server.url}/v2/models/m/infer", [infer_body(rows)] * 2000, concurrency=16)
    assert [r.status for r in replies] == [200] * 2000
    versions = [r.headers["x-model-version"] for r in replies]
    assert versions == [r.body["model_version"] for r in replies]
    share = versions.count("2") / len(versions)
    assert 0.15 <= share <= 0.25, share
    # a routing key keeps a client on one side
    keyed = post_all(
        f"{server.url}/v2/models/m/infer", [infer_body(rows)] * 100, concurrency=8,
        headers=[{"x-routing-key": f"user-{i % 10}"} for i in range(100)],
    )
    by_key: dict[str, set[str]] = {}
    for i, reply in enumerate(keyed):
        by_key.setdefault(f"user-{i % 10}", set()).add(reply.headers["x-model-version"])
    assert all(len(seen) == 1 for seen in by_key.values())
    # the operator moves the weight at runtime
    state = _route(server, weight=60)
    assert state["routing"] == {"stable": "1", "candidate": "2", "weight": 60.0, "shadow": False}
    replies = post_all(f"{server.url}/v2/models/m/infer", [infer_body(rows)] * 600, concurrency=16)
    share = [r.headers["x-model-version"] for r in replies].count("2") / 600
    assert 0.52 <= share <= 0.68, share  # 600 draws: 3.9 standard deviations either side
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_values(text, "modelops_traffic_percent")['{model="m",version="2"}'] == 60.0


def test_shadow_records_agreement_and_both_accuracies(store: str, server: ServerProcess) -> None:
    rng = np.random.default_rng(1)
    rows = rng.random((300, N_FEATURES), dtype=np.float32)
    stable = load_predictor(artifacts.version_uri(store, "m", 1)).predict(rows)
    shadow = load_predictor(artifacts.version_uri(store, "m", 3)).predict(rows)
    # what --shadow 3 sets at start-up, set at runtime the way the operator does
    assert _route(server, stable="1", candidate="3", weight=0, shadow=True)["routing"]["shadow"] is True
    bodies = [infer_body(rows[i : i + 1], f"s-{i}") for i in range(300)]
    replies = post_all(f"{server.url}/v2/models/m/infer", bodies, concurrency=16)
    assert {r.headers["x-model-version"] for r in replies} == {"1"}  # a shadow never answers
    # the labels are the stable version's answers: its accuracy is 1, the shadow's is the agreement
    feedback = [{"id": replies[i].headers["x-feedback-id"], "labels": [int(stable[i])]} for i in range(300)]
    deadline = time.monotonic() + 10
    while True:  # comparisons finish just after the answers
        text = httpx.get(f"{server.url}/metrics").text
        compared = metric_values(text, "modelops_shadow_compared_rows_total").get('{model="m",version="3"}')
        if compared == 300 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert compared == 300
    assert httpx.post(f"{server.url}/v2/models/m/feedback", json=feedback).json()["accepted"] == 300
    text = httpx.get(f"{server.url}/metrics").text
    expected = float((stable == shadow).mean())
    agreement = metric_values(text, "modelops_shadow_agreement_ratio")['{model="m",version="3"}']
    assert agreement == pytest.approx(expected, abs=0.01)
    assert 0.0 < expected < 1.0  # two different random models: the check can fail
    accuracy = metric_values(text, "modelops_rolling_accuracy")
    assert accuracy['{model="m",version="1"}'] == 1.0
    assert accuracy['{model="m",version="3"}'] == pytest.approx(expected, abs=0.01)
    state = httpx.get(f"{server.url}/v2/admin/routing", headers=AUTH).json()
    assert state["shadow"]["3"]["compared"] == 300
    assert state["feedback"]["3"]["accuracy"] == pytest.approx(expected, abs=0.01)


async def _load_until(url: str, stop: asyncio.Event, concurrency: int) -> list[tuple[int, str]]:
    """Keep `concurrency` requests in flight until stopped; (status, version) of each."""
    rows = np.random.default_rng(2).random((2, N_FEATURES), dtype=np.float32)
    body = orjson.dumps(infer_body(rows))
    results: list[tuple[int, str]] = []
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while not stop.is_set():
                try:
                    async with session.post(url, data=body) as reply:
                        await reply.read()
                        results.append((reply.status, reply.headers.get("x-model-version", "")))
                except aiohttp.ClientError as error:
                    results.append((-1, repr(error)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def _swap_under_load(url: str) -> tuple[list[tuple[int, str]], list[int]]:
    stop = asyncio.Event()
    load = asyncio.create_task(_load_until(f"{url}/v2/models/m/infer", stop, concurrency=12))
    swaps = []
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=AUTH) as admin:
        await asyncio.sleep(1.0)
        for version in (2, 3, 1):
            reply = await admin.post("/v2/admin/load", json={"version": version})
            swaps.append(reply.status_code)
            await asyncio.sleep(1.0)
    stop.set()
    return await load, swaps


def test_hot_swap_under_load_fails_no_request(server: ServerProcess) -> None:
    _route(server, stable="1", candidate=None)
    # the admin API wants the bearer token
    assert httpx.get(f"{server.url}/v2/admin/routing").status_code == 401
    wrong = httpx.post(f"{server.url}/v2/admin/load", json={"version": 2}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    results, swaps = asyncio.run(_swap_under_load(server.url))
    assert swaps == [200, 200, 200]
    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:5]
    assert len(results) > 200
    served = [version for _, version in results]
    assert {"1", "2", "3"} <= set(served)
    assert served[-1] == "1"
    time.sleep(0.5)
    state = httpx.get(f"{server.url}/v2/admin/routing", headers=AUTH).json()
    assert state["routing"]["stable"] == "1"
    assert state["loaded"] == ["1"]  # replaced versions were unloaded after draining


def test_rollout_flags_set_the_first_routing() -> None:
    """--shadow/--candidate become the Routing the server starts with (served above via the API)."""
    shadow = parse_config(["--store", "file:///s", "--model", "m", "--shadow", "3"])
    canary = parse_config(["--store", "file:///s", "--model", "m", "--candidate", "2", "--canary-weight", "20"])
    assert (shadow.shadow, shadow.candidate) == ("3", None)
    assert (canary.candidate, canary.canary_weight) == ("2", 20.0)
    routing = Routing("1", "3", 0.0, True)
    assert {routing.pick(None) for _ in range(20)} == {("1", "3")}
    with pytest.raises(SystemExit):
        parse_config(["--store", "file:///s", "--model", "m", "--canary-weight", "20"])
