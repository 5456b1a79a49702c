"""Backpressure and deadlines against a real server: a full queue answers 429 with
Retry-After at once and the server stays healthy; a missed deadline answers 504."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.runtime.serve_helpers import (
    N_FEATURES,
    ServerProcess,
    infer_body,
    metric_values,
    post_all,
    save_classifier,
)

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    store = f"file://{tmp_path_factory.mktemp('store')}"
    save_classifier(store, "big", 1, hidden=[1024, 1024])  # slow enough per 256-row request
    return store


def test_full_queue_answers_429_and_stays_healthy(store: str, tmp_path: Path) -> None:
    args = ["--store", store, "--model", "big", "--version", "1",
            "--max-batch-size", "1", "--max-queue", "2", "--max-wait-ms", "0", "--timeout-ms", "60000"]
    with ServerProcess(args, tmp_path / "server.log") as server:
        rows = np.random.default_rng(0).random((256, N_FEATURES), dtype=np.float32)
        replies = post_all(f"{server.url}/v2/models/big/infer", [infer_body(rows)] * 48, concurrency=48)
        statuses = [r.status for r in replies]
        assert set(statuses) <= {200, 429}, statuses
        rejected = [r for r in replies if r.status == 429]
        assert rejected and statuses.count(200) >= 3
        assert all(r.headers["retry-after"] == "1" and "full" in r.body["error"] for r in rejected)
        text = httpx.get(f"{server.url}/metrics").text
        labels = '{model="big",version="1"}'
        assert metric_values(text, "modelops_rejected_requests_total")[labels] == len(rejected)
        codes = metric_values(text, "modelops_requests_total")
        assert codes['{code="429",model="big",version="1"}'] == len(rejected)
        assert metric_values(text, "modelops_queue_depth")[labels] == 0
        # still healthy: ready, and the next request is answered
        assert server.ready()
        one = httpx.post(f"{server.url}/v2/models/big/infer", json=infer_body(rows[:1]), timeout=30)
        assert one.status_code == 200


def test_missed_deadline_answers_504(store: str, tmp_path: Path) -> None:
    # A lone request waits up to 200 ms for its batch to fill, past its 1 ms deadline.
    args = ["--store", store, "--model", "big", "--version", "1",
            "--max-batch-size", "64", "--max-wait-ms", "200", "--timeout-ms", "1"]
    with ServerProcess(args, tmp_path / "server.log") as server:
        rows = np.zeros((1, N_FEATURES), dtype=np.float32)
        reply = httpx.post(f"{server.url}/v2/models/big/infer", json=infer_body(rows), timeout=30)
        assert reply.status_code == 504 and "1 ms" in reply.json()["error"]
        assert server.ready()
        text = httpx.get(f"{server.url}/metrics").text
        assert metric_values(text, "modelops_requests_total")['{code="504",model="big",version="1"}'] == 1
