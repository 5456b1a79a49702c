"""Backpressure and deadlines against one real server: a full queue answers 429 with
Retry-After at once and the server stays healthy; a missed deadline answers 504.

The server batches up to 512 rows and waits up to 10 s for a batch to fill, with
a 5 s deadline: two 256-row requests fill a batch at once, while a lone 1-row
request can only time out — a deterministic 504 without a slow model."""

from __future__ import annotations

from collections.abc import Iterator

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
LABELS = '{model="big",version="1"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = f"file://{tmp_path_factory.mktemp('store')}"
    save_classifier(store, "big", 1, hidden=[1024, 1024])  # slow enough per 512-row batch
    args = ["--store", store, "--model", "big", "--version", "1", "--max-batch-size", "512",
            "--max-wait-ms", "10000", "--max-queue", "2", "--timeout-ms", "5000"]
    with ServerProcess(args, tmp_path_factory.mktemp("logs") / "server.log") as process:
        yield process


def test_full_queue_answers_429_and_stays_healthy(server: ServerProcess) -> None:
    rows = np.random.default_rng(0).random((256, N_FEATURES), dtype=np.float32)
    replies = post_all(f"{server.url}/v2/models/big/infer", [infer_body(rows)] * 48, concurrency=48)
    statuses = [r.status for r in replies]
    assert set(statuses) <= {200, 429, 504}, statuses  # 504 only if this machine is very slow
    rejected = [r for r in replies if r.status == 429]
    assert len(rejected) >= 30 and statuses.count(200) >= 2, statuses
    assert all(r.headers["retry-after"] == "1" and "full" in r.body["error"] for r in rejected)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_values(text, "modelops_rejected_requests_total")[LABELS] == len(rejected)
    codes = metric_values(text, "modelops_requests_total")
    assert codes['{code="429",model="big",version="1"}'] == len(rejected)
    assert metric_values(text, "modelops_queue_depth")[LABELS] == 0
    batches = metric_values(text, "modelops_batch_size_count")[LABELS]
    assert metric_values(text, "modelops_batch_size_sum")[LABELS] == 512 * batches  # always full
    # still healthy: ready, and a request that fills a batch is answered
    assert server.ready()
    full = np.random.default_rng(1).random((512, N_FEATURES), dtype=np.float32)
    assert httpx.post(f"{server.url}/v2/models/big/infer", json=infer_body(full), timeout=30).status_code == 200


def test_missed_deadline_answers_504(server: ServerProcess) -> None:
    rows = np.zeros((1, N_FEATURES), dtype=np.float32)
    reply = httpx.post(f"{server.url}/v2/models/big/infer", json=infer_body(rows), timeout=30)
    assert reply.status_code == 504 and "5000 ms" in reply.json()["error"]
    assert server.ready()
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_values(text, "modelops_requests_total")['{code="504",model="big",version="1"}'] >= 1
