"""The data pipeline a worker runs: its shards → examples → split → scaling → batches.

Memory is bounded by one read chunk plus the shuffle buffer, whatever the dataset size
(on an object store, plus two shards' bytes: the next one is fetched while one is read,
see `prefetch`), plus, when this worker's share fits `DataPlan.resident_bytes`, its
decoded examples: those are read once per job and replayed every epoch (see `Resident`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from modelops.api.artifact import ShardInfo
from modelops.api.training import DataFormat, SequenceSpec, Task
from modelops_runtime.data import split
from modelops_runtime.data.examples import Examples, Layout, make_layout
from modelops_runtime.data.partition import Slice, assign
from modelops_runtime.data.prefetch import DEFAULT_MAX_BYTES, iter_shards
from modelops_runtime.data.shards import shard_uri
from modelops_runtime.data.shuffle import Batch, ShuffleBuffer
from modelops_runtime.data.stats import RunningMoments, label_key, sort_labels

Part = Literal["train", "validation", "all"]


@dataclass(frozen=True)
class Scaling:
    """Standardisation of inputs and, for regression and forecasting, of targets."""

    input_mean: np.ndarray
    input_std: np.ndarray
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights-file entries the predictor reads (`input.*`, `target.*`)."""
        # Copies: a forecaster's input and target statistics are the same arrays, and
        # safetensors refuses tensors that share memory.
        out = {
            "input.mean": torch.tensor(self.input_mean, dtype=torch.float32),
            "input.std": torch.tensor(self.input_std, dtype=torch.float32),
        }
        if self.target_mean is not None and self.target_std is not None:
            out["target.mean"] = torch.tensor(self.target_mean, dtype=torch.float32)
            out["target.std"] = torch.tensor(self.target_std, dtype=torch.float32)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Scaling | None:
        if "input.mean" not in tensors:
            return None

        def get(name: str) -> np.ndarray | None:
            return tensors[name].numpy() if name in tensors else None

        return cls(tensors["input.mean"].numpy(), tensors["input.std"].numpy(), get("target.mean"), get("target.std"))


@dataclass(frozen=True)
class ReadLog:
    """Shards whose rows were decoded: the record of what a run actually read."""

    paths: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class DataPlan:
    """Everything a worker needs to stream its share of a dataset."""

    uri: str
    format: DataFormat
    shards: list[ShardInfo]
    features: list[str]
    label: str | None
    sequence: SequenceSpec | None
    task: Task
    classes: list[str] | None = None
    validation_split: float = 0.2
    seed: int = 0
    scaling: Scaling | None = None
    chunk_rows: int = 16384
    shuffle_rows: int = 65536
    # A worker keeps its decoded share in memory up to this size; larger shares stream.
    resident_bytes: int = 256 << 20
    # On an object store a shard up to this size is fetched whole, while the one before is read.
    prefetch_bytes: int = DEFAULT_MAX_BYTES

    def layout(self) -> Layout:
        return make_layout(self.task, self.features, self.label, self.sequence, self.classes)

    def slice(self, rank: int, world: int) -> Slice:
        layout = self.layout()
        return assign(self.shards, [layout.count(s.rows) for s in self.shards], rank, world)


def _part_mask(plan: DataPlan, layout: Layout, shard: ShardInfo, count: int, index: np.ndarray, part: Part) -> np.ndarray:
    if part == "all":
        return np.ones(len(index), dtype=bool)
    validation = layout.validation_mask(plan.seed, shard.path, index, count, plan.validation_split)
    return validation if part == "validation" else ~validation


def _scale(plan: DataPlan, examples: Examples) -> Examples:
    scaling = plan.scaling
    if scaling is None:
        return examples
    x = (examples.x - scaling.input_mean) / scaling.input_std
    y = examples.y
    if scaling.target_mean is not None and scaling.target_std is not None:
        y = (y - scaling.target_mean) / scaling.target_std
    return Examples(x.astype(np.float32, copy=False), y.astype(y.dtype, copy=False), examples.index)


class Resident:
    """One worker's examples, kept after their first read when its share fits the budget.

    It replays exactly what streaming yields (the same runs of examples per shard, in the
    order asked for), so batches, and thus trained weights, do not depend on whether the
    data fit: a job reads small data once, and every epoch after that is compute only.
    """

    def __init__(self, plan: DataPlan, rank: int, world: int) -> None:
        layout = plan.layout()
        share = plan.slice(rank, world)
        width = layout.n_features * (layout.window or 1)
        # float32 inputs plus at most 8 bytes of target per example (int64 class, or floats).
        per_example = 4 * width + 8 * (plan.sequence.horizon if plan.sequence else 1)
        self.fits = sum(share.counts) * per_example <= plan.resident_bytes
        self._kept: dict[tuple[Part, int, bool], list[Examples]] = {}

    def get(self, part: Part, position: int, scaled: bool) -> list[Examples] | None:
        return self._kept.get((part, position, scaled))

    def keep(self, part: Part, position: int, scaled: bool, runs: list[Examples]) -> None:
        self._kept[(part, position, scaled)] = runs


def iter_examples(
    plan: DataPlan,
    part: Part,
    rank: int = 0,
    world: int = 1,
    *,
    epoch: int | None = None,
    scaled: bool = True,
    log: ReadLog | None = None,
    resident: Resident | None = None,
) -> Iterator[Examples]:
    """This worker's examples of `part`, shard by shard; shard order shuffled per epoch."""
    layout = plan.layout()
    share = plan.slice(rank, world)
    order = list(range(len(share.shards)))
    if epoch is not None:
        order = list(np.random.default_rng([plan.seed, epoch, rank]).permutation(order))
    keeping = resident is not None and resident.fits
    # Only shards not kept yet are read: the next of those is fetched while one is consumed.
    unread = [p for p in order if resident is None or resident.get(part, p, scaled) is None]
    readers = iter_shards(
        [(shard_uri(plan.uri, share.shards[p]), share.shards[p].size) for p in unread],
        plan.format,
        layout.columns,
        plan.chunk_rows,
        plan.prefetch_bytes,
    )
    for position in order:
        shard = share.shards[position]
        if log is not None:
            log.paths.add(shard.path)
        kept = resident.get(part, position, scaled) if resident is not None else None
        if kept is not None:
            yield from kept
            continue
        runs: list[Examples] = []
        cursor = layout.cursor()
        count = share.counts[position]
        for chunk in next(readers):
            examples = cursor.feed(chunk)
            mask = share.keep(position, examples.index) & _part_mask(plan, layout, shard, count, examples.index, part)
            examples = examples.take(mask)
            if len(examples):
                out = _scale(plan, examples) if scaled else examples
                if keeping:
                    runs.append(out)
                yield out
        # Only a shard read to its end is kept: a consumer may stop early (a full epoch).
        if resident is not None and keeping:
            resident.keep(part, position, scaled, runs)


def count_examples(plan: DataPlan, part: Part, rank: int = 0, world: int = 1) -> int:
    """Examples of `part` this worker will see, from the manifest alone (no data read)."""
    layout = plan.layout()
    share = plan.slice(rank, world)
    total = 0
    for position, shard in enumerate(share.shards):
        index = np.arange(share.counts[position], dtype=np.int64)
        mask = share.keep(position, index) & _part_mask(plan, layout, shard, len(index), index, part)
        total += int(mask.sum())
    return total


def steps_per_epoch(plan: DataPlan, world: int, batch_size: int) -> int:
    """Steps every worker takes per epoch: the same on all, or collective ops would hang.

    The smallest share decides; a worker with more examples leaves its last few for
    the next epoch's shuffle, as `drop_last` would.
    """
    smallest = min(count_examples(plan, "train", rank, world) for rank in range(world))
    if smallest == 0:
        raise ValueError("a worker has no training examples; use fewer workers or more data")
    return max(1, smallest // batch_size)


def train_batches(
    plan: DataPlan,
    rank: int,
    world: int,
    epoch: int,
    batch_size: int,
    log: ReadLog | None = None,
    resident: Resident | None = None,
) -> Iterator[Batch]:
    """Shuffled training batches for one epoch, deterministic in (seed, epoch, rank)."""
    buffer = ShuffleBuffer(plan.shuffle_rows, batch_size, np.random.default_rng([plan.seed, epoch, rank, 1]))
    for examples in iter_examples(plan, "train", rank, world, epoch=epoch, log=log, resident=resident):
        yield from buffer.push(examples)
    yield from buffer.finish()


def epoch_batches(
    plan: DataPlan,
    rank: int,
    world: int,
    epoch: int,
    batch_size: int,
    steps: int,
    log: ReadLog | None = None,
    resident: Resident | None = None,
) -> Iterator[Batch]:
    """Exactly `steps` batches; starts the stream over if it runs dry (e.g. rows with bad values)."""
    done = 0
    while done < steps:
        produced = 0
        stream = train_batches(plan, rank, world, epoch + done, batch_size, log, resident)
        for batch in stream:
            yield batch
            produced += 1
            done += 1
            if done == steps:
                if resident is not None and resident.fits:
                    # The rest of the stream (the rows `drop_last` leaves) is read too, so
                    # every shard is read to its end once and kept.
                    for _ in stream:
                        pass
                return
        if produced == 0:
            raise ValueError(f"worker {rank} read no training batches")


@dataclass
class Survey:
    """What one pass over the training rows finds: feature moments and class labels."""

    scaling: Scaling
    classes: list[str] | None
    n_examples: int


def survey(plan: DataPlan, log: ReadLog | None = None) -> Survey:
    """Streaming statistics over the training part of the plan's shards."""
    columns = [plan.sequence.column] if plan.sequence else [*plan.features, str(plan.label)]
    inputs, targets = RunningMoments(), RunningMoments()
    labels: set[str] = set()
    rows_seen = 0
    readers = iter_shards(
        [(shard_uri(plan.uri, s), s.size) for s in plan.shards],
        plan.format,
        columns,
        plan.chunk_rows,
        plan.prefetch_bytes,
    )
    for shard, chunks in zip(plan.shards, readers, strict=True):
        if log is not None:
            log.paths.add(shard.path)
        offset = 0
        # Series statistics come from the rows before the validation tail only.
        cutoff = int(shard.rows * (1.0 - plan.validation_split))
        for chunk in chunks:
            n = len(chunk[columns[0]])
            index = np.arange(offset, offset + n, dtype=np.int64)
            offset += n
            if plan.sequence is not None:
                values = np.asarray(chunk[plan.sequence.column], dtype=np.float64)[index < cutoff]
                inputs.update(values)
                rows_seen += len(values)
                continue
            train = ~split.hashed_validation(plan.seed, shard.path, index, plan.validation_split)
            inputs.update(np.stack([np.asarray(chunk[f], np.float64)[train] for f in plan.features], axis=1))
            label = chunk[str(plan.label)]
            rows_seen += int(train.sum())
            if plan.task == Task.CLASSIFICATION:
                # Classes from every row: a label seen only in validation still needs an output.
                labels.update(label_key(v) for v in np.unique(label))
            else:
                targets.update(np.asarray(label[train], np.float64))
    mean, std = inputs.result()
    if plan.sequence is not None:
        scaling = Scaling(mean, std, mean, std)
    elif plan.task == Task.CLASSIFICATION:
        scaling = Scaling(mean, std)
    else:
        t_mean, t_std = targets.result()
        scaling = Scaling(mean, std, t_mean, t_std)
    classes = sort_labels(labels) if plan.task == Task.CLASSIFICATION and plan.sequence is None else None
    return Survey(scaling=scaling, classes=classes, n_examples=rows_seen)
