"""Training from s3:// against the real S3 server (SeaweedFS): the next shard is fetched
while one is consumed, and a run on two Ray workers whose worker process is killed
resumes from its S3 checkpoint and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.data.prefetch import iter_shards
from modelops_runtime.data.readers import iter_chunks
from modelops_runtime.train import checkpoint, job
from modelops_runtime.train.loop import EpochEnd
from tests.runtime.s3_helpers import BUCKET, digits_on_s3, fresh_prefix, key_of, keys, upload
from tests.runtime.train_helpers import digits_spec, training_job

pytestmark = pytest.mark.runtime

EPOCHS = 4
KILL_AT = 2
COLUMNS = ["f0", "f1", "target"]


def test_the_next_shard_is_fetched_while_one_is_consumed_and_no_further(
    s3: Any, digits_dir: Path
) -> None:
    root = fresh_prefix("prefetch")
    upload(s3, digits_dir / "train", root)
    names = [f"part-0000{i}.parquet" for i in range(4)]
    shards = [(f"{root}/{name}", (digits_dir / "train" / name).stat().st_size) for name in names]
    readers = iter_shards(shards, DataFormat.PARQUET, COLUMNS, chunk_rows=64)
    first = next(readers)
    got = [next(first)]
    # While shard 0 is being read, shard 1 (and only shard 1) is fetched: gone from the
    # server now, it still reads whole, and shard 2, gone too, was not fetched ahead.
    # (A GET of a few kB on loopback takes milliseconds: the pause leaves ample time.)
    time.sleep(3.0)
    client = s3.client()
    for name in names[1:3]:
        client.delete_object(Bucket=BUCKET, Key=f"{key_of(root)}/{name}")
    got += list(first)
    second = list(next(readers))
    with pytest.raises(FileNotFoundError):
        list(next(readers))
    readers.close()
    # What was read from S3 is what the shards hold, chunk for chunk.
    local = [(digits_dir / "train" / name).as_uri() for name in names[:2]]
    for streamed, uri in zip([got, second], local, strict=True):
        expected = list(iter_chunks(uri, DataFormat.PARQUET, COLUMNS, 64))
        assert len(streamed) == len(expected) > 1
        assert all(
            np.array_equal(a[c], b[c])
            for a, b in zip(streamed, expected, strict=True)
            for c in COLUMNS
        )


def test_a_shard_over_the_byte_budget_streams_from_the_store(s3: Any, digits_dir: Path) -> None:
    root = fresh_prefix("budget")
    upload(s3, digits_dir / "train", root)
    names = [f"part-0000{i}.parquet" for i in range(2)]
    sizes = [(digits_dir / "train" / name).stat().st_size for name in names]
    readers = iter_shards(
        [(f"{root}/{n}", s) for n, s in zip(names, sizes, strict=True)],
        DataFormat.PARQUET,
        COLUMNS,
        chunk_rows=64,
        max_bytes=min(sizes) - 1,
    )
    first = next(readers)
    next(first)
    time.sleep(1.0)
    s3.client().delete_object(Bucket=BUCKET, Key=f"{key_of(root)}/{names[1]}")
    list(first)
    # Over budget, shard 1 was not held in memory ahead of its turn.
    with pytest.raises(FileNotFoundError):
        list(next(readers))


def test_attempts_are_claimed_once_each_on_s3(s3: Any) -> None:
    # Folders do not exist on an object store: each attempt is claimed as an object.
    root = fresh_prefix("attempts")
    assert [checkpoint.next_attempt(root) for _ in range(3)] == [0, 1, 2]
    assert keys(s3, root) == ["attempts/0", "attempts/1", "attempts/2"]


@pytest.fixture(scope="module")
def ray_with_s3(s3_server: Any) -> Iterator[Any]:
    """Ray whose workers get the S3 settings, as a pod's Secret gives them to every
    process. A Ray started earlier in the session is restarted with them, and restored
    afterwards."""
    import ray

    options = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
    running = ray.is_initialized()
    if running:
        ray.shutdown()
    ray.init(**options, runtime_env={"env_vars": s3_server.env()})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            patch.setenv(name, value)
        yield s3_server
    ray.shutdown()
    if running:
        ray.init(**options)


@pytest.fixture(scope="module")
def uninterrupted(
    ray_with_s3: Any, digits_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> job.JobResult:
    """The same job on file://, on 2 Ray workers, never killed."""
    store = tmp_path_factory.mktemp("whole")
    spec = digits_spec(digits_dir, store, resources={"workers": 2}, training={"epochs": EPOCHS})
    return job.run(
        training_job("digits", spec), "whole", progress_path=str(store / "progress.json")
    )


def test_a_killed_worker_resumes_from_the_s3_checkpoint_and_ends_as_an_uninterrupted_run(
    ray_with_s3: Any, uninterrupted: job.JobResult, digits_dir: Path, tmp_path: Path
) -> None:
    spec, store = digits_on_s3(ray_with_s3, digits_dir, "resume", epochs=EPOCHS)
    spec = {**spec, "resources": {"workers": 2}, "backoffLimit": 2}
    marker = tmp_path / "killed"

    def kill_rank_one_once(end: EpochEnd) -> None:
        # The worker actor's process dies: Ray Train restarts the group from the store.
        if end.epoch == KILL_AT and end.rank == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    result = job.run(
        training_job("digits", spec),
        "killed-s3",
        progress_path=str(tmp_path / "progress.json"),
        on_epoch_end=kill_rank_one_once,
    )
    assert marker.exists(), "the worker was never killed"
    epochs = result.record["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    assert [e["attempt"] for e in epochs] == [0] * KILL_AT + [1] * (EPOCHS - KILL_AT)
    # The checkpoints the retry resumed from are on the server, under the store.
    assert any(k.startswith("digits/checkpoints/killed-s3/") for k in keys(ray_with_s3, store))
    assert result.ref.uri == f"{store}/digits/v1"
    assert result.record["shardsRead"] == [f"part-0000{i}.parquet" for i in range(4)]
    # Shuffling, dropout and the data read are fixed by (seed, epoch, rank): read from S3
    # and resumed, the run ends with the weights and metrics of the uninterrupted one.
    expected = artifacts.load_weights(artifacts.join(uninterrupted.ref.uri, artifacts.WEIGHTS))
    got = artifacts.load_weights(artifacts.join(result.ref.uri, artifacts.WEIGHTS))
    assert expected.keys() == got.keys()
    assert all(bool((expected[k] == got[k]).all()) for k in expected)
    assert result.ref.metrics == uninterrupted.ref.metrics
    assert result.ref.metrics["accuracy"] >= 0.85, result.ref.metrics
