"""The training runtime in-process (no Ray): every optimizer and loss, the recurrent
forecasters, resuming a stopped process, and the command line."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from modelops_runtime.train import job
from modelops_runtime.train.loop import EpochEnd
from tests.runtime.train_helpers import digits_spec, series_spec, training_job

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x·w + noise over 5 features, in 2 CSV shards (the CSV reader's test too)."""
    root = tmp_path_factory.mktemp("linear")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1200, 5)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5, 3.0, 0.0], dtype=np.float32) * 10 + 50 + rng.normal(0, 1.0, 1200)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(5)])
    frame["y"] = y.astype(np.float32)
    frame["above"] = (frame["y"] > frame["y"].median()).astype(np.int64)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        frame.iloc[part].to_csv(root / f"part-{i}.csv", index=False)
    return root


def linear_spec(data: Path, store: Path, **training: object) -> dict[str, object]:
    return {
        "model": {"architecture": "mlp", "task": "regression", "hiddenLayers": [32]},
        "data": {"uri": data.as_uri(), "format": "csv", "features": [f"x{i}" for i in range(5)], "label": "y"},
        "training": {"epochs": 6, "batchSize": 32, "seed": 0, "optimizer": {"name": "adam", "learningRate": 0.01}, **training},
        "output": {"modelName": "linear", "storeUri": store.as_uri()},
    }


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "learningRate": 0.05},
        {"name": "momentum", "learningRate": 0.02, "momentum": 0.9},
        {"name": "momentum", "learningRate": 0.02, "momentum": 0.9, "nesterov": True},
        {"name": "adagrad", "learningRate": 0.05},
        {"name": "rmsprop", "learningRate": 0.002, "momentum": 0.5},
        {"name": "adam", "learningRate": 0.01, "weightDecay": 0.001},
        {"name": "adamw", "learningRate": 0.01, "weightDecay": 0.01},
    ],
    ids=lambda o: o["name"] + ("-nesterov" if o.get("nesterov") else ""),
)
def test_every_optimizer_fits_a_linear_target(linear_dir: Path, tmp_path: Path, optimizer: dict[str, object]) -> None:
    spec = linear_spec(linear_dir, tmp_path, optimizer=optimizer, schedule={"type": "step", "stepSize": 4, "gamma": 0.5})
    result = job.run(training_job("linear", spec), "opt", use_ray=False)
    assert result.ref.metrics["r2"] > 0.9, result.ref.metrics
    rates = [epoch["learning_rate"] for epoch in result.record["epochs"]]
    assert rates[4] == pytest.approx(rates[0] * 0.5)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_regression_losses(linear_dir: Path, tmp_path: Path, loss: str) -> None:
    result = job.run(training_job("linear", linear_spec(linear_dir, tmp_path, loss=loss)), "loss", use_ray=False)
    metrics = result.ref.metrics
    assert set(metrics) == {"mse", "mae", "r2"}
    assert metrics["r2"] > 0.9, metrics
    # The target was standardised for training; the stored version predicts in raw units.
    predictor = load_predictor(result.ref.uri)
    assert abs(float(predictor.predict(np.zeros((1, 5), np.float32))[0, 0]) - 50.0) < 10.0


@pytest.mark.parametrize("loss", ["crossEntropy", "binaryCrossEntropy", "mse"])
def test_classification_losses(linear_dir: Path, tmp_path: Path, loss: str) -> None:
    spec = linear_spec(linear_dir, tmp_path, loss=loss)
    spec["model"] = {"architecture": "mlp", "task": "classification", "hiddenLayers": [16]}
    spec["data"]["label"] = "above"  # type: ignore[index]
    result = job.run(training_job("above", spec), "cls", use_ray=False)
    card = artifacts.load_card(result.ref.uri)
    assert card.classes == ["0", "1"]
    assert card.n_outputs == (1 if loss == "binaryCrossEntropy" else 2)
    assert result.ref.metrics["accuracy"] > 0.9, result.ref.metrics
    assert math.isfinite(result.ref.metrics["log_loss"])


def test_lstm_forecaster_beats_the_naive_baseline(series_dir: Path, tmp_path: Path) -> None:
    result = job.run(training_job("lstm", series_spec(series_dir, tmp_path, "lstm")), "lstm", use_ray=False)
    metrics = result.ref.metrics
    assert metrics["mse"] <= 0.8 * metrics["mse_naive"], metrics
    assert metrics["skill"] == pytest.approx(1 - metrics["mse"] / metrics["mse_naive"])
    card = artifacts.load_card(result.ref.uri)
    assert (card.window, card.n_features, card.n_outputs) == (24, 1, 1)
    assert card.inputs[0].shape == [-1, 24]


@pytest.mark.parametrize("architecture", ["gru", "rnn"])
def test_gru_and_rnn_train_end_to_end(series_dir: Path, tmp_path: Path, architecture: str) -> None:
    spec = series_spec(series_dir, tmp_path, architecture, model={"hiddenSize": 16, "numLayers": 2, "bidirectional": True, "dropout": 0.1}, training={"epochs": 3, "batchSize": 64, "optimizer": {"learningRate": 0.01}})
    result = job.run(training_job(architecture, spec), architecture, use_ray=False)
    assert result.ref.metrics["mse"] < result.ref.metrics["mse_naive"], result.ref.metrics
    predictor = load_predictor(result.ref.uri)
    window = pd.read_parquet(series_dir / "holdout").to_numpy(np.float32)[:24, 0]
    forecast = predictor.predict(window[None, :])
    assert forecast.shape == (1, 1) and np.isfinite(forecast).all()


class _ProcessDied(Exception):
    """Stands in for the process being killed after a checkpoint."""


def test_a_new_process_resumes_the_job_from_its_checkpoint(digits_dir: Path, tmp_path: Path) -> None:
    tj = training_job("resume", digits_spec(digits_dir, tmp_path, training={"epochs": 4}))

    def die_after_two(end: EpochEnd) -> None:
        if end.epoch == 2:
            raise _ProcessDied

    with pytest.raises(_ProcessDied):
        job.run(tj, "resume-job", use_ray=False, on_epoch_end=die_after_two)
    result = job.run(tj, "resume-job", use_ray=False)
    epochs = [(e["epoch"], e["attempt"]) for e in result.record["epochs"]]
    assert epochs == [(1, 0), (2, 0), (3, 1), (4, 1)]
    # The version reserved by the first process is the one the second one finished.
    assert result.ref.version == 1 and artifacts.list_versions(tmp_path.as_uri(), "digits") == [1]


def test_a_write_cut_short_is_redone_and_the_resumed_run_ends_with_the_uninterrupted_weights(
    digits_dir: Path, tmp_path: Path
) -> None:
    whole = job.run(training_job("whole", digits_spec(digits_dir, tmp_path / "whole", training={"epochs": 4})), "whole", use_ray=False)
    store = tmp_path / "cut"
    tj = training_job("cut", digits_spec(digits_dir, store, training={"epochs": 4}))

    def die_after_three(end: EpochEnd) -> None:
        if end.epoch == 3:
            raise _ProcessDied

    with pytest.raises(_ProcessDied):
        job.run(tj, "cut", use_ray=False, on_epoch_end=die_after_three)
    # Checkpoints are written in the background: a process killed mid-write leaves an
    # epoch folder without its state.json, which is written last.
    [state] = store.glob("digits/checkpoints/cut/*/epoch-3/state.json")
    state.unlink()
    resumed = job.run(tj, "cut", use_ray=False)
    assert [(e["epoch"], e["attempt"]) for e in resumed.record["epochs"]] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    # Dropout, shuffling and the data read are fixed by (seed, epoch, rank): the redone
    # epoch repeats the lost one exactly, and so the weights match bit for bit.
    expected = artifacts.load_weights(artifacts.join(whole.ref.uri, artifacts.WEIGHTS))
    got = artifacts.load_weights(artifacts.join(resumed.ref.uri, artifacts.WEIGHTS))
    assert expected.keys() == got.keys()
    assert all(bool((expected[k] == got[k]).all()) for k in expected)
    assert resumed.ref.metrics == whole.ref.metrics


def test_data_that_fits_is_read_once_per_job(digits_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(digits_dir, tmp_path / "digits")
    train = tmp_path / "digits" / "train"
    tj = training_job("once", digits_spec(tmp_path / "digits", tmp_path / "store", training={"epochs": 3}))

    def take_the_shards_away(end: EpochEnd) -> None:
        if end.epoch == 1:
            train.rename(tmp_path / "gone")

    result = job.run(tj, "once", use_ray=False, on_epoch_end=take_the_shards_away)
    assert [e["epoch"] for e in result.record["epochs"]] == [1, 2, 3]
    assert not train.exists()


def test_resident_data_replays_the_streamed_batches_exactly(digits_dir: Path) -> None:
    from modelops.api.training import DataFormat, Task
    from modelops_runtime.data.pipeline import DataPlan, Resident, survey, train_batches
    from modelops_runtime.data.shards import snapshot

    uri = (digits_dir / "train").as_uri()
    plan = DataPlan(
        uri=uri, format=DataFormat.PARQUET, shards=snapshot(uri, DataFormat.PARQUET).shards,
        features=[f"f{i}" for i in range(64)], label="target", sequence=None, task=Task.CLASSIFICATION,
        validation_split=0.2, seed=5, chunk_rows=100, shuffle_rows=300,
    )
    found = survey(plan)
    plan = replace(plan, scaling=found.scaling, classes=found.classes)
    resident = Resident(plan, rank=1, world=2)
    assert resident.fits
    for epoch in (1, 2, 3):
        streamed = list(train_batches(plan, 1, 2, epoch, 32))
        replayed = list(train_batches(plan, 1, 2, epoch, 32, resident=resident))
        assert len(streamed) == len(replayed) > 0
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(streamed, replayed, strict=True))
    # Over budget: nothing is kept, and the data streams as before.
    small = Resident(replace(plan, resident_bytes=1024), rank=1, world=2)
    list(train_batches(plan, 1, 2, 1, 32, resident=small))
    assert not small.fits and small.get("train", 0, True) is None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelops_runtime", *args],
        capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})},
    )


def test_command_line_datasets_train_evaluate(tmp_path: Path) -> None:
    made = _cli("datasets", "sunspots", str(tmp_path / "series"), "--rows", "600", "--shards", "2", "--format", "csv")
    assert made.returncode == 0, made.stderr
    spec = series_spec(tmp_path, tmp_path / "store", "rnn", data={"format": "csv", "uri": (tmp_path / "series").as_uri(), "holdoutUri": None}, training={"epochs": 2})
    del spec["data"]["holdoutUri"]  # type: ignore[attr-defined]
    manifest = tmp_path / "job.yaml"
    manifest.write_text(json.dumps({"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "cli"}, "spec": spec}))
    progress_file = tmp_path / "progress.json"
    trained = _cli("train", "--spec", str(manifest), "--local", "--version", "7", "--job-id", "cli", "--progress-file", str(progress_file))
    assert trained.returncode == 0, trained.stderr
    lines = trained.stdout.splitlines()
    result = json.loads(lines[-1].removeprefix("MODELOPS_RESULT "))
    assert lines[-1].startswith("MODELOPS_RESULT ") and result["version"] == 7
    assert any(line.startswith("MODELOPS_PROGRESS ") for line in lines[:-1])
    final = json.loads(progress_file.read_text())
    assert (final["phase"], final["epoch"], final["totalEpochs"], final["percent"]) == ("finished", 2, 2, 100)

    evaluated = _cli("evaluate", "--store", (tmp_path / "store").as_uri(), "--model", "series-rnn", "--version", "latest",
                     "--data", (tmp_path / "series").as_uri(), "--format", "csv")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {"mse", "mae", "r2", "mse_naive", "skill"}

    invalid = tmp_path / "bad.yaml"
    invalid.write_text(json.dumps({"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "x"}, "spec": {**spec, "training": {"epochs": 0}}}))
    rejected = _cli("train", "--spec", str(invalid), "--local")
    assert rejected.returncode == 2 and "spec.training.epochs" in rejected.stderr
