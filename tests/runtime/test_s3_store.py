"""s3:// end to end against a real S3-compatible server (SeaweedFS, `tests/s3_server.py`):
training reads its shards from the bucket and publishes its version there, whole or not
at all; a server loads that version from the bucket; batch prediction goes from S3 input
to S3 output and resumes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelops.api.training import DataFormat
from modelops_runtime import artifacts, batch_predict, publish
from modelops_runtime.predictor import load_predictor
from modelops_runtime.train import job
from tests.runtime.s3_helpers import (
    assert_predicted,
    digits_on_s3,
    fresh_prefix,
    keys,
    read,
    upload,
)
from tests.runtime.serve_helpers import (
    ServerProcess,
    infer_body,
    post_all,
    save_classifier,
    write_feature_shards,
)
from tests.runtime.train_helpers import training_job

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def s3_env(s3_server: Any) -> Iterator[Any]:
    """This module's process environment points at the server, as a pod's Secret would."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            patch.setenv(name, value)
        yield s3_server


@pytest.fixture(scope="module")
def trained(s3_env: Any, digits_dir: Path) -> tuple[job.JobResult, str]:
    """Digits trained in this process from s3://…/data/ into the store s3://…/models."""
    spec, store = digits_on_s3(s3_env, digits_dir, "train", epochs=4)
    return job.run(training_job("digits-s3", spec), "digits-s3", use_ray=False), store


def test_training_reads_its_shards_from_s3_and_publishes_the_version_there(
    trained: tuple[job.JobResult, str], s3_env: Any, digits_dir: Path
) -> None:
    result, store = trained
    assert result.ref.uri == f"{store}/digits/v1"
    assert result.record["shardsRead"] == [f"part-0000{i}.parquet" for i in range(4)]
    assert result.ref.metrics["accuracy"] >= 0.85, result.ref.metrics
    # The version as the server holds it, listed by a client independent of the runtime.
    assert keys(s3_env, result.ref.uri) == ["metrics.json", "model.json", "model.safetensors",
                                             "publish.json", "snapshot.json", "training.json"]
    assert not [k for k in keys(s3_env, f"{store}/digits") if k.startswith(".staging/")]
    snapshot = artifacts.load_snapshot(result.ref.uri)
    assert snapshot is not None and [s.path for s in snapshot.shards] == [f"part-0000{i}.parquet" for i in range(4)]
    local = (digits_dir / "train" / "part-00000.parquet").read_bytes()
    import hashlib

    assert snapshot.shards[0].sha256 == hashlib.sha256(local).hexdigest()
    # Read back from S3, the version predicts the holdout as well as the run measured.
    frame = pd.read_parquet(digits_dir / "holdout")
    predictor = load_predictor(result.ref.uri)
    predicted = predictor.predict(frame[[f"f{i}" for i in range(64)]].to_numpy(np.float32))
    labels = np.asarray([predictor.card.classes[i] for i in predicted], dtype=np.int64)  # type: ignore[index]
    assert float((labels == frame["target"].to_numpy()).mean()) == pytest.approx(result.ref.metrics["accuracy"])


def test_a_version_on_s3_is_invisible_until_whole_and_never_overwritten(s3_env: Any) -> None:
    root = fresh_prefix("publish")
    save_classifier(f"{root}/staged", "m", 1, hidden=[16])
    staged = artifacts.version_uri(f"{root}/staged", "m", 1)
    store = f"{root}/store"
    target = artifacts.version_uri(store, "m", 1)
    run = {"jobId": "j1", "run": "r1"}
    steps = publish.publish_steps(staged, target, run)
    seen = []
    for step in steps:
        step()
        versions = artifacts.list_versions(store, "m")
        seen.append(versions)
        if versions:
            # Whenever a reader counts the version, every file of it is there.
            assert {"model.json", "model.safetensors", "metrics.json"} <= set(keys(s3_env, target))
            load_predictor(target)
    # Claim and file copies first, card copy last, staging removed: visible from the card on.
    assert seen == [[]] * (len(steps) - 2) + [[1], [1]]
    assert not keys(s3_env, staged)
    # A second writer of v1 is refused by the server's conditional put, even mid-copy.
    weights = read(s3_env, f"{target}/model.safetensors")
    save_classifier(f"{root}/other", "m", 1, hidden=[16], seed=5)
    with pytest.raises(publish.VersionTaken, match="job j1, run r1"):
        publish.publish(artifacts.version_uri(f"{root}/other", "m", 1), target, {"jobId": "j2", "run": "r2"})
    assert read(s3_env, f"{target}/model.safetensors") == weights
    assert publish.owner(target) == run


def test_a_server_loads_its_version_from_s3_and_answers_over_http(
    trained: tuple[job.JobResult, str], s3_env: Any, digits_dir: Path, tmp_path: Path
) -> None:
    result, store = trained
    rows = pd.read_parquet(digits_dir / "holdout")[[f"f{i}" for i in range(64)]].to_numpy(np.float32)[:16]
    started = time.monotonic()
    with ServerProcess(["--store", store, "--model", "digits", "--version", "1"], tmp_path / "serve.log",
                       env=s3_env.env()) as server:
        cold_start = time.monotonic() - started
        replies = post_all(f"{server.url}/v2/models/digits/infer", [infer_body(rows)], concurrency=1)
    assert replies[0].status == 200, replies[0].body
    outputs = {o["name"]: o["data"] for o in replies[0].body["outputs"]}
    predictor = load_predictor(result.ref.uri)
    assert predictor.card.classes is not None
    assert [str(label) for label in outputs["label"]] == [predictor.card.classes[i] for i in predictor.predict(rows)]
    print(f"cold start of a server with its version on S3: {cold_start:.1f}s")


def test_batch_prediction_from_s3_input_to_s3_output_resumes(s3_env: Any, tmp_path: Path) -> None:
    root = fresh_prefix("batch")
    store = f"{root}/models"
    save_classifier(store, "m", 1, hidden=[32])
    data = write_feature_shards(tmp_path / "in", "parquet", shards=3, rows=300)
    upload(s3_env, tmp_path / "in", f"{root}/in")
    output = f"{root}/out"
    state = batch_predict.run(store, "m", "1", f"{root}/in", output, DataFormat.PARQUET, 64, [])
    assert (state["phase"], state["shards_done"], state["shards_skipped"], state["rows"]) == ("Succeeded", 3, 0, 900)
    assert_predicted(s3_env, store, output, data)
    # A rerun finds every shard done by this version, and rewrites none.
    again = batch_predict.run(store, "m", "1", f"{root}/in", output, DataFormat.PARQUET, 64, [])
    assert (again["shards_done"], again["shards_skipped"], again["rows"]) == (3, 3, 0)
