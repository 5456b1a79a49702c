"""Versions are immutable and their lineage is true, with real training in-process.

The quickstart case first: a job trained on 6 shards, the folder grown to 12 (4 with
shuffled labels), the same job run again with its fixed job id. Then reruns, resumes and
stores written before versions were published create-only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modelops.lifecycle.lineage import Origin
from modelops_runtime import artifacts, publish
from modelops_runtime.datasets import write_digits
from modelops_runtime.train import checkpoint, job
from modelops_runtime.train.loop import EpochEnd
from tests.runtime.train_helpers import digits_spec, merge, training_job

pytestmark = pytest.mark.runtime

JOB_ID = "local-digits-mlp"  # what local mode passes, in every run


@pytest.fixture(scope="module")
def twelve(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits in 12 training shards and a holdout shard."""
    root = tmp_path_factory.mktemp("digits12")
    write_digits(root, shards=12, holdout_fraction=0.2, seed=0)
    return root


def _tree(folder: Path) -> dict[str, str]:
    """Every file under a folder, by relative path, with its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _data(twelve: Path, where: Path, count: int) -> Path:
    train = where / "train"
    train.mkdir(parents=True, exist_ok=True)
    for shard in sorted((twelve / "train").glob("*.parquet"))[:count]:
        shutil.copy(shard, train / shard.name)
    return train


def _spec(twelve: Path, train: Path, store: Path, **extra: object) -> dict[str, object]:
    spec = digits_spec(twelve, store, **merge({"data": {"uri": train.as_uri()}, "training": {"epochs": 2}}, extra))
    spec["model"] = {"architecture": "mlp", "task": "classification", "hiddenLayers": [32]}
    return spec


def _grow(twelve: Path, train: Path) -> list[str]:
    """Shards 6..11 arrive; 4 of them with their labels shuffled."""
    added = []
    for i, shard in enumerate(sorted((twelve / "train").glob("*.parquet"))[6:]):
        frame = pd.read_parquet(shard)
        if i < 4:
            frame["target"] = np.random.default_rng(i).permutation(frame["target"].to_numpy())
        frame.to_parquet(train / shard.name, index=False)
        added.append(shard.name)
    return added


def test_the_quickstart_rerun_trains_the_new_data_and_leaves_v1_as_it_was(twelve: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train = _data(twelve, tmp_path, 6)
    tj = training_job("digits-mlp", _spec(twelve, train, store))
    first = job.run(tj, JOB_ID, use_ray=False)
    assert first.ref.version == 1 and first.origin == Origin.TRAINED
    v1 = store / "digits" / "v1"
    before = _tree(v1)

    _grow(twelve, train)
    second = job.run(tj, JOB_ID, use_ray=False)

    assert _tree(v1) == before, "a published version was rewritten"
    assert second.ref.version == 2 and artifacts.list_versions(store.as_uri(), "digits") == [1, 2]
    assert second.origin == Origin.TRAINED and "changed" in second.reason
    # Trained from the start on all 12 shards, not finished from the 6-shard checkpoint.
    assert [e["epoch"] for e in second.record["epochs"]] == [1, 2]
    every = sorted(p.name for p in train.glob("*.parquet"))
    assert second.record["shardsRead"] == every
    snapshot = artifacts.load_snapshot(second.ref.uri)
    assert snapshot is not None and [s.path for s in snapshot.shards] == second.record["shardsRead"]
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in train.glob("*.parquet")}
    assert {s.path: s.sha256 for s in snapshot.shards} == on_disk
    assert second.ref.data_snapshot is not None and second.ref.data_snapshot.shards == 12
    old = artifacts.load_snapshot(first.ref.uri)
    assert old is not None and len(old.shards) == 6


def test_an_unchanged_rerun_reports_the_version_it_published(twelve: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    tj = training_job("digits-mlp", _spec(twelve, _data(twelve, tmp_path, 3), store))
    first = job.run(tj, JOB_ID, use_ray=False)
    before = _tree(store)
    again = job.run(tj, JOB_ID, use_ray=False)
    assert (again.ref.version, again.origin) == (first.ref.version, Origin.REUSED)
    assert again.ref.metrics == first.ref.metrics and again.ref.data_snapshot == first.ref.data_snapshot
    assert _tree(store) == before, "a no-op rerun wrote to the store"
    assert json.loads(json.dumps(again.summary()))["origin"]["how"] == "Reused"
    # The operator's number for a retried attempt is the version it published: reused too.
    assert job.run(tj, JOB_ID, version=first.ref.version, use_ray=False).origin == Origin.REUSED


class _Killed(Exception):
    """Stands in for the worker process being killed after a checkpoint."""


def _die_after_one(end: EpochEnd) -> None:
    if end.epoch == 1:
        raise _Killed


def test_a_killed_run_resumes_only_with_the_same_spec_and_data(twelve: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train = _data(twelve, tmp_path, 3)
    tj = training_job("digits-mlp", _spec(twelve, train, store, training={"epochs": 3}))

    with pytest.raises(_Killed):
        job.run(tj, JOB_ID, use_ray=False, on_epoch_end=_die_after_one)
    resumed = job.run(tj, JOB_ID, use_ray=False)
    assert resumed.origin == Origin.RESUMED and "epoch 1" in resumed.reason
    assert [(e["epoch"], e["attempt"]) for e in resumed.record["epochs"]] == [(1, 0), (2, 1), (3, 1)]

    # Another learning rate: a new run, trained from the start.
    changed = _spec(twelve, train, store, training={"epochs": 3, "optimizer": {"learningRate": 0.01}})
    with pytest.raises(_Killed):
        job.run(training_job("digits-mlp", changed), JOB_ID, use_ray=False, on_epoch_end=_die_after_one)
    other = training_job("digits-mlp", _spec(twelve, train, store, training={"epochs": 3, "optimizer": {"learningRate": 0.02}}))
    fresh = job.run(other, JOB_ID, use_ray=False)
    assert fresh.origin == Origin.TRAINED and [e["attempt"] for e in fresh.record["epochs"]] == [0, 0, 0]

    # A new shard after a kill: a new run too, which reads it.
    third = training_job("digits-mlp", _spec(twelve, train, store, training={"epochs": 3, "optimizer": {"learningRate": 0.03}}))
    with pytest.raises(_Killed):
        job.run(third, JOB_ID, use_ray=False, on_epoch_end=_die_after_one)
    shutil.copy(sorted((twelve / "train").glob("*.parquet"))[5], train)
    grown = job.run(third, JOB_ID, use_ray=False)
    assert grown.origin == Origin.TRAINED and [e["attempt"] for e in grown.record["epochs"]] == [0, 0, 0]
    assert len(grown.record["shardsRead"]) == 4
    assert artifacts.list_versions(store.as_uri(), "digits") == [1, 2, 3]


def test_a_taken_number_moves_the_new_version_to_the_next_free_one(twelve: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train = _data(twelve, tmp_path, 2)
    first = job.run(training_job("a", _spec(twelve, train, store)), "job-a", use_ray=False)
    before = _tree(store / "digits" / "v1")
    # The operator allocated 1 for job b too (another namespace, another book): the
    # store says no, and b publishes as 2.
    second = job.run(training_job("b", _spec(twelve, train, store)), "job-b", version=1, use_ray=False)
    assert (first.ref.version, second.ref.version) == (1, 2)
    assert _tree(store / "digits" / "v1") == before
    assert artifacts.load_card(second.ref.uri).version == 2
    assert artifacts.read_json(artifacts.join(second.ref.uri, "training.json"))["version"] == 2
    assert publish.owner(second.ref.uri) == second.record["run"]


def test_a_store_written_before_publishing_loads_and_is_never_resumed(twelve: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    train = _data(twelve, tmp_path, 2)
    tj = training_job("digits-mlp", _spec(twelve, train, store))
    made = job.run(tj, "made", use_ray=False)
    # The old layout: the version folder without publish.json, and the job's checkpoints
    # straight under its id, with job.json holding the version it wrote.
    legacy = store / "digits" / "v1"
    (legacy / publish.OWNER).unlink()
    run_root = Path(made.ref.uri.removeprefix("file://")).parent / "checkpoints" / "made"
    [scoped] = [p for p in run_root.iterdir() if p.is_dir()]
    old_root = store / "digits" / "checkpoints" / JOB_ID
    shutil.copytree(scoped, old_root)
    (old_root / "job.json").write_text(json.dumps({"version": 1}))
    (store / "digits" / "v2").mkdir()  # an old writer's reservation, never finished
    before = _tree(legacy)

    assert artifacts.list_versions(store.as_uri(), "digits") == [1]
    assert artifacts.load_card(artifacts.version_uri(store.as_uri(), "digits", 1)).version == 1
    assert checkpoint.latest_epoch(old_root.as_uri()) == 2
    result = job.run(tj, JOB_ID, use_ray=False)
    assert result.ref.version == 3 and result.origin == Origin.TRAINED
    assert [e["attempt"] for e in result.record["epochs"]] == [0, 0]
    assert _tree(legacy) == before
    weights = artifacts.load_weights(artifacts.join(result.ref.uri, artifacts.WEIGHTS))
    assert all(torch.isfinite(t).all() for t in weights.values())
