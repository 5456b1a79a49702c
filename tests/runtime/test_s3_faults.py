"""The S3 server killed mid-run and restarted a few seconds later: the run's calls are
retried with back-off until it answers again, and the run completes with nothing lost or
duplicated: training with every epoch once and its version published whole, batch
prediction with every output shard whole and once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelops.api.training import DataFormat
from modelops_runtime import artifacts, batch_predict
from modelops_runtime.train import job
from modelops_runtime.train.loop import EpochEnd
from tests.runtime.s3_helpers import assert_predicted, digits_on_s3, fresh_prefix, keys, upload
from tests.runtime.serve_helpers import save_classifier, write_feature_shards
from tests.runtime.train_helpers import training_job

pytestmark = pytest.mark.runtime

KILL_AT = 2
SHARDS = 6
ROWS = 2000
EPOCHS = 4
DOWN_SECONDS = 3.0


def _kill_and_restart_later(server: Any, back: list[float]) -> threading.Thread:
    """SIGKILL the server now; start it again on the same ports and data DOWN_SECONDS later."""
    server.stop(kill=True)

    def restart() -> None:
        time.sleep(DOWN_SECONDS)
        server.start()
        back.append(time.monotonic())

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


def test_training_waits_for_a_restarted_server_and_completes(s3: Any, digits_dir: Path) -> None:
    spec, store = digits_on_s3(s3, digits_dir, "fault", epochs=EPOCHS)
    back: list[float] = []
    restarter: list[threading.Thread] = []

    def kill_server_once(end: EpochEnd) -> None:
        # The loop goes on at once; its next store calls (checkpoint, version) meet no server.
        if end.epoch == KILL_AT and not restarter:
            restarter.append(_kill_and_restart_later(s3, back))

    try:
        result = job.run(training_job("fault", spec), "fault-s3", use_ray=False, on_epoch_end=kill_server_once)
        finished = time.monotonic()
    finally:
        for thread in restarter:
            thread.join(timeout=90)
    assert restarter and back, "the server was never killed and restarted"
    # The run could only finish by reaching the server after it came back.
    assert finished > back[0]
    assert [e["epoch"] for e in result.record["epochs"]] == list(range(1, EPOCHS + 1))
    assert artifacts.list_versions(store, "digits") == [1]
    assert {"model.json", "model.safetensors", "publish.json"} <= set(keys(s3, result.ref.uri))
    assert result.ref.metrics["accuracy"] >= 0.85, result.ref.metrics


def test_batch_prediction_waits_for_a_restarted_server_and_writes_each_shard_once(s3: Any, tmp_path: Path) -> None:
    root = fresh_prefix("fault-batch")
    store = f"{root}/models"
    save_classifier(store, "m", 1, hidden=[512, 512])  # slow enough to be caught mid-run
    data = write_feature_shards(tmp_path / "in", "parquet", SHARDS, ROWS)
    upload(s3, tmp_path / "in", f"{root}/in")
    output = f"{root}/out"
    states: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: states.append(batch_predict.run(
        store, "m", "1", f"{root}/in", output, DataFormat.PARQUET, 100, ["id"])))
    runner.start()
    deadline = time.monotonic() + 120
    while not [k for k in keys(s3, output) if k.startswith("part-")] and time.monotonic() < deadline:
        time.sleep(0.1)
    done_at_kill = len([k for k in keys(s3, output) if k.startswith("part-")])
    back: list[float] = []
    restarter = _kill_and_restart_later(s3, back)
    runner.join(timeout=300)
    restarter.join(timeout=90)
    assert back and not runner.is_alive() and states, "the run did not finish"
    assert 1 <= done_at_kill < SHARDS, done_at_kill
    assert (states[0]["phase"], states[0]["shards_done"], states[0]["rows"]) == ("Succeeded", SHARDS, SHARDS * ROWS)
    assert_predicted(s3, store, output, data)
