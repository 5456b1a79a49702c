"""The training runtime on a real Ray: distributed digits with a killed worker and a
search with an ensemble; and a warm start that reads only the delta and a replay sample."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelops_runtime import artifacts
from modelops_runtime.data.split import rank_by_hash
from modelops_runtime.predictor import load_predictor
from modelops_runtime.train import job
from modelops_runtime.train.loop import EpochEnd
from tests.runtime.train_helpers import digits_spec, training_job

pytestmark = pytest.mark.runtime

KILL_AT = 3


def holdout_accuracy(uri: str, digits: Path) -> float:
    """Accuracy of the stored version on the holdout shard, computed here independently."""
    frame = pd.read_parquet(digits / "holdout")
    predictor = load_predictor(uri)
    predicted = predictor.predict(frame[[f"f{i}" for i in range(64)]].to_numpy(np.float32))
    labels = np.asarray([predictor.card.classes[i] for i in predicted], dtype=np.int64)  # type: ignore[index]
    return float((labels == frame["target"].to_numpy()).mean())


@pytest.fixture(scope="module")
def killed_run(ray_session: Any, digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[job.JobResult, Path, Path]:
    """Digits on 2 Ray workers; rank 1 kills its own process once, after epoch KILL_AT."""
    store = tmp_path_factory.mktemp("store")
    marker = store / "killed"
    progress_file = store / "progress.json"
    spec = digits_spec(digits_dir, store, resources={"workers": 2}, backoffLimit=2)

    def kill_rank_one_once(end: EpochEnd) -> None:
        if end.epoch == KILL_AT and end.rank == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    result = job.run(training_job("digits", spec), "digits-ray", progress_path=str(progress_file), on_epoch_end=kill_rank_one_once)
    return result, marker, progress_file


def test_mlp_on_two_ray_workers_reaches_95_percent_on_holdout(killed_run: tuple[job.JobResult, Path, Path], digits_dir: Path) -> None:
    result, _, _ = killed_run
    assert result.ref.metrics["accuracy"] >= 0.95, result.ref.metrics
    assert holdout_accuracy(result.ref.uri, digits_dir) == pytest.approx(result.ref.metrics["accuracy"])
    # Both workers' reads are gathered: between them they read every training shard.
    assert result.record["shardsRead"] == [f"part-0000{i}.parquet" for i in range(4)]
    snapshot = artifacts.load_snapshot(result.ref.uri)
    assert snapshot is not None and len(snapshot.shards) == 4 and all(len(s.sha256) == 64 for s in snapshot.shards)


def test_killed_worker_resumes_from_the_checkpoint_without_redoing_epochs(killed_run: tuple[job.JobResult, Path, Path]) -> None:
    result, marker, progress_file = killed_run
    assert marker.exists(), "the worker was never killed"
    epochs = result.record["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert [e["attempt"] for e in epochs] == [0] * KILL_AT + [1] * (12 - KILL_AT)
    progress = json.loads(progress_file.read_text())
    assert progress["phase"] == "finished" and progress["epoch"] == 12


def test_warm_start_reads_only_the_delta_and_the_replay_sample(digits_dir: Path, tmp_path: Path) -> None:
    # In-process: gathering the reads of several Ray workers is shown by the run above.
    data = tmp_path / "data"
    shutil.copytree(digits_dir / "train", data / "train")
    store = tmp_path / "store"
    base = digits_spec(digits_dir, store, data={"uri": (data / "train").as_uri()}, training={"epochs": 3})
    first = job.run(training_job("v1", base), "v1", use_ray=False)
    assert first.record["shardsRead"] == [f"part-0000{i}.parquet" for i in range(4)]

    # One shard changes, one arrives; three stay as they were.
    changed = pd.read_parquet(data / "train" / "part-00001.parquet")
    changed.iloc[: len(changed) // 2].to_parquet(data / "train" / "part-00001.parquet", index=False)
    pd.read_parquet(digits_dir / "holdout").iloc[:150].to_parquet(data / "train" / "part-00004.parquet", index=False)

    warm = {
        "warmStart": {"replayFraction": 0.34, "learningRateScale": 0.5},
        "training": {"epochs": 2},
    }
    result = job.run(training_job("v2", {**base, **warm}), "v2", use_ray=False)
    unchanged = ["part-00000.parquet", "part-00002.parquet", "part-00003.parquet"]
    replay = result.record["delta"]["replay"]
    assert result.record["delta"]["new"] == ["part-00004.parquet"]
    assert result.record["delta"]["changed"] == ["part-00001.parquet"]
    assert replay == sorted(rank_by_hash(7, unchanged)[:2]) and len(replay) == 2
    assert result.record["shardsRead"] == sorted(["part-00001.parquet", "part-00004.parquet", *replay])
    assert result.ref.parent_version == 1 and artifacts.load_card(result.ref.uri).parent == 1
    # The next delta is computed against everything seen, not just what this run read.
    snapshot = artifacts.load_snapshot(result.ref.uri)
    assert snapshot is not None and [s.path for s in snapshot.shards] == [f"part-0000{i}.parquet" for i in range(5)]
    assert result.ref.metrics["accuracy"] > 0.85


def test_search_picks_the_best_trial_and_saves_a_loadable_ensemble(ray_session: Any, digits_dir: Path, tmp_path: Path) -> None:
    spec = digits_spec(
        digits_dir,
        tmp_path,
        model={"hiddenLayers": [64]},
        training={"epochs": 3},
        resources={"cpusPerWorker": "500m"},
        search={
            "trials": 4,
            "maxConcurrent": 2,
            "algorithm": "random",
            "earlyStopping": {"type": "none"},
            "metric": "val_accuracy",
            "mode": "max",
            "ensembleTopK": 2,
            "ensembleMethod": "mean",
            "space": [
                {"path": "training.optimizer.learningRate", "type": "logUniform", "low": 0.0003, "high": 0.01},
                {"path": "model.hiddenLayers", "type": "choice", "values": ["[32]", "[96, 32]"]},
            ],
        },
    )
    progress_file = tmp_path / "progress.json"
    result = job.run(training_job("search", spec), "search", progress_path=str(progress_file))

    trials = json.loads((tmp_path / "digits" / f"v{result.ref.version}" / "trials.json").read_text())
    assert len(trials) == 4 and all("val_accuracy" in t["metrics"] for t in trials)
    ranked = sorted(trials, key=lambda t: -t["metrics"]["val_accuracy"])
    assert result.record["search"]["best"] == ranked[0]["id"]

    card = artifacts.load_card(result.ref.uri)
    assert card.ensemble is not None and card.spec is None
    assert [m.source for m in card.ensemble.members] == [ranked[0]["id"], ranked[1]["id"]]
    predictor = load_predictor(result.ref.uri)
    assert len(predictor.members) == 2
    frame = pd.read_parquet(digits_dir / "holdout")
    scores = predictor.scores(frame[[f"f{i}" for i in range(64)]].to_numpy(np.float32))
    assert scores.shape == (len(frame), 10) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert result.ref.metrics["accuracy"] == pytest.approx(holdout_accuracy(result.ref.uri, digits_dir))

    # At most maxConcurrent trials ran at any moment, though the CPUs allowed four.
    spans = []
    run_root = tmp_path / "digits" / "checkpoints" / "search" / result.record["run"]["run"]
    for trial in [t["id"] for t in trials]:
        state = json.loads((run_root / "trials" / trial / "epoch-3" / "state.json").read_text())
        spans.append((state["history"][0]["started_at"], state["history"][-1]["started_at"] + state["history"][-1]["train_seconds"]))
    overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlap <= 2
    progress = json.loads(progress_file.read_text())
    assert len(progress["trials"]) == 4


@pytest.mark.parametrize("case", ["empty folder", "missing column"])
def test_input_errors_exit_with_their_own_code(case: str, digits_dir: Path, tmp_path: Path) -> None:
    """Finding 12: errors that always recur exit 4, so the operator does not retry them."""
    from modelops_runtime.errors import INPUT_ERROR_EXIT_CODE
    from modelops_runtime.train import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    if case == "empty folder":
        spec = digits_spec(digits_dir, tmp_path / "store", data={"uri": empty.as_uri(), "label": "target"})
    else:
        spec = digits_spec(digits_dir, tmp_path / "store")
        spec["data"]["features"] = ["no_such_column"]
    manifest = {"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "bad"}, "spec": spec}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert cli.main(["--spec", str(path), "--local", "--version", "1", "--job-id", "j"]) == INPUT_ERROR_EXIT_CODE
