"""The data pipeline's pure parts: split, partition, windows, shuffle, statistics, readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.artifact import ShardInfo
from modelops.api.training import DataFormat, SequenceSpec, Task
from modelops_runtime.data import split
from modelops_runtime.data.examples import Examples, LabelEncoder, WindowLayout
from modelops_runtime.data.partition import assign
from modelops_runtime.data.pipeline import (
    DataPlan,
    count_examples,
    iter_examples,
    steps_per_epoch,
    survey,
    train_batches,
)
from modelops_runtime.data.shards import snapshot
from modelops_runtime.data.shuffle import ShuffleBuffer
from modelops_runtime.data.stats import RunningMoments, label_key


def test_hashed_split_is_stable_and_close_to_the_fraction() -> None:
    index = np.arange(20000)
    mask = split.hashed_validation(3, "part-0.parquet", index, 0.2)
    assert 0.19 < mask.mean() < 0.21
    # Chunking does not matter: a row's side depends on its index alone.
    halves = np.concatenate([split.hashed_validation(3, "part-0.parquet", index[:7777], 0.2),
                             split.hashed_validation(3, "part-0.parquet", index[7777:], 0.2)])
    assert (halves == mask).all()
    assert (split.hashed_validation(4, "part-0.parquet", index, 0.2) != mask).any()
    assert (split.hashed_validation(3, "part-1.parquet", index, 0.2) != mask).any()


def test_chronological_split_takes_the_tail() -> None:
    assert split.chronological_validation(np.arange(10), 10, 0.3).tolist() == [False] * 7 + [True] * 3


@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    world=st.integers(1, 8),
)
def test_every_example_goes_to_exactly_one_worker(counts: list[int], world: int) -> None:
    shards = [ShardInfo(path=f"p{i}", size=1, sha256="x", rows=c) for i, c in enumerate(counts)]
    seen: dict[tuple[str, int], int] = {}
    for rank in range(world):
        share = assign(shards, counts, rank, world)
        for position, shard in enumerate(share.shards):
            index = np.arange(share.counts[position])
            for i in index[share.keep(position, index)]:
                seen[(shard.path, int(i))] = seen.get((shard.path, int(i)), 0) + 1
    assert seen == {(f"p{s}", i): 1 for s, c in enumerate(counts) for i in range(c)}


def test_whole_shards_are_dealt_out_when_they_balance() -> None:
    shards = [ShardInfo(path=f"p{i}", size=1, sha256="x", rows=5) for i in range(5)]
    counts = [10, 40, 10, 20, 0]
    assert [s.path for s in assign(shards, counts, 0, 2).shards] == ["p1"]
    assert [s.path for s in assign(shards, counts, 1, 2).shards] == ["p0", "p2", "p3"]
    assert assign(shards, counts, 1, 2).modulo == 1
    # Too uneven for whole shards: every worker reads all of them, keeping every other example.
    lopsided = assign(shards, [100, 10, 10, 10, 0], 1, 2)
    assert (len(lopsided.shards), lopsided.modulo, lopsided.remainder) == (5, 2, 1)


@settings(max_examples=60)
@given(
    rows=st.integers(0, 120),
    cuts=st.lists(st.integers(1, 30), max_size=8),
    window=st.integers(2, 8),
    horizon=st.integers(1, 3),
    stride=st.integers(1, 2),
)
def test_windows_do_not_depend_on_how_the_shard_is_chunked(rows: int, cuts: list[int], window: int, horizon: int, stride: int) -> None:
    layout = WindowLayout(SequenceSpec(column="v", window=window, horizon=horizon, stride=min(stride, window)))
    series = np.arange(rows, dtype=np.float32)
    cursor = layout.cursor()
    parts, start = [], 0
    for cut in [*cuts, rows]:
        chunk = series[start : start + cut]
        start += len(chunk)
        if len(chunk):
            parts.append(cursor.feed({"v": chunk}))
    xs = np.concatenate([p.x for p in parts]) if parts else np.zeros((0, window))
    ys = np.concatenate([p.y for p in parts]) if parts else np.zeros((0, horizon))
    index = np.concatenate([p.index for p in parts]) if parts else np.zeros(0)
    assert len(index) == layout.count(rows)
    step = layout.spec.stride
    for k, i in enumerate(index):
        assert xs[k].tolist() == series[i * step : i * step + window].tolist()
        assert ys[k].tolist() == series[i * step + window : i * step + window + horizon].tolist()


@given(sizes=st.lists(st.integers(0, 50), max_size=10), capacity=st.integers(1, 64), batch=st.integers(1, 16))
def test_shuffle_buffer_emits_every_row_once_in_batches(sizes: list[int], capacity: int, batch: int) -> None:
    buffer = ShuffleBuffer(capacity, batch, np.random.default_rng(0))
    out: list[np.ndarray] = []
    start = 0
    for size in sizes:
        rows = np.arange(start, start + size, dtype=np.float32)[:, None]
        start += size
        for x, _ in buffer.push(Examples(rows, rows[:, 0], np.arange(size))):
            out.append(x)
        assert buffer._rows < max(capacity, batch) + 50  # bounded: never the whole stream
    out.extend(x for x, _ in buffer.finish())
    assert all(len(x) == batch for x in out[:-1])
    assert sorted(np.concatenate(out)[:, 0].tolist() if out else []) == list(range(start))


def test_running_moments_match_numpy() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(5, 3, size=(1000, 3))
    data[:, 2] = 7.0  # a constant column
    moments = RunningMoments()
    for chunk in np.array_split(data, 7):
        moments.update(chunk)
    mean, std = moments.result()
    assert np.allclose(mean, data.mean(axis=0), atol=1e-4)
    assert np.allclose(std[:2], data.std(axis=0)[:2], atol=1e-4) and std[2] == 1.0


def test_label_encoder_fast_and_general_paths() -> None:
    assert LabelEncoder(["0", "1", "5"]).encode(np.array([5, 0, 1, 5])).tolist() == [2, 0, 1, 2]
    assert LabelEncoder(["0", "1"]).encode(np.array([1.0, 0.0])).tolist() == [1, 0]
    assert LabelEncoder(["cat", "dog"]).encode(np.array(["dog", "cat"], dtype=object)).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not among the classes"):
        LabelEncoder(["0", "1"]).encode(np.array([2]))
    assert label_key(np.float64(3.0)) == "3" and label_key("a") == "a"


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, rows in enumerate([300, 50, 0, 170]):
        frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "y": rng.integers(0, 3, rows)})
        frame.to_parquet(tmp_path / f"part-{i}.parquet", index=False, row_group_size=64)
        frame.to_csv(tmp_path / f"part-{i}.csv", index=False)
    (tmp_path / "README.txt").write_text("not a shard")
    return tmp_path


def _plan(folder: Path, fmt: DataFormat) -> DataPlan:
    return DataPlan(
        uri=folder.as_uri(), format=fmt, shards=snapshot(folder.as_uri(), fmt).shards, features=["a", "b"],
        label="y", sequence=None, task=Task.CLASSIFICATION, classes=["0", "1", "2"], seed=5, chunk_rows=40,
    )


def test_parquet_and_csv_shards_stream_the_same_examples(table_dir: Path) -> None:
    manifests = {fmt: snapshot(table_dir.as_uri(), fmt) for fmt in DataFormat}
    assert [s.path for s in manifests[DataFormat.CSV].shards] == [f"part-{i}.csv" for i in range(4)]
    assert [s.rows for s in manifests[DataFormat.CSV].shards] == [300, 50, 0, 170]
    assert [s.rows for s in manifests[DataFormat.PARQUET].shards] == [300, 50, 0, 170]
    # (The split hashes shard paths, so only the whole of each is comparable across formats.)
    got = {}
    for fmt in DataFormat:
        examples = list(iter_examples(_plan(table_dir, fmt), "all", scaled=False))
        got[fmt] = (np.concatenate([e.x for e in examples]), np.concatenate([e.y for e in examples]))
    assert np.allclose(got[DataFormat.PARQUET][0], got[DataFormat.CSV][0])
    assert (got[DataFormat.PARQUET][1] == got[DataFormat.CSV][1]).all()


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_counts_from_the_manifest_match_what_is_read(table_dir: Path, world: int) -> None:
    plan = _plan(table_dir, DataFormat.PARQUET)
    total = 0
    for rank in range(world):
        for part in ("train", "validation"):
            read = sum(len(e) for e in iter_examples(plan, part, rank, world))
            assert read == count_examples(plan, part, rank, world)
            total += read
    assert total == 520
    batches = list(train_batches(plan, 0, world, epoch=1, batch_size=16))
    assert sum(len(x) for x, _ in batches) == count_examples(plan, "train", 0, world)
    assert steps_per_epoch(plan, world, 16) == min(count_examples(plan, "train", r, world) for r in range(world)) // 16


def test_survey_finds_classes_and_moments_of_the_training_rows(table_dir: Path) -> None:
    plan = _plan(table_dir, DataFormat.PARQUET)
    found = survey(plan)
    train = np.concatenate([e.x for e in iter_examples(plan, "train", scaled=False)])
    assert found.classes == ["0", "1", "2"] and found.n_examples == len(train)
    assert np.allclose(found.scaling.input_mean, train.mean(axis=0), atol=1e-5)
