"""Warm start: which stored version to start from, and which shards to train on.

The new shards and the changed ones are the delta; beside them a replay sample of the
unchanged shards guards against forgetting. The sample is chosen by hashing shard
paths with the seed, so a rerun reads the same shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelops.api.artifact import ModelCard, ShardInfo, SnapshotManifest
from modelops.api.training import TrainingJobSpec
from modelops.lifecycle.delta import DataDelta, compute_delta
from modelops_runtime import artifacts
from modelops_runtime.data import split
from modelops_runtime.data.pipeline import Scaling


class NothingToTrain(ValueError):
    """The dataset has no new or changed shards since the parent version."""


@dataclass(frozen=True)
class WarmStart:
    """The parent version and the shards a warm-started run reads."""

    model_name: str
    version: int
    uri: str
    card: ModelCard
    scaling: Scaling | None
    delta: DataDelta
    replay: list[ShardInfo]
    shards: list[ShardInfo]
    lr_scale: float

    @property
    def weights_uri(self) -> str:
        return artifacts.join(self.uri, artifacts.WEIGHTS)


def replay_sample(unchanged: list[ShardInfo], fraction: float, seed: int) -> list[ShardInfo]:
    """ceil(fraction * unchanged) of the unchanged shards, fixed by the seed."""
    if fraction <= 0 or not unchanged:
        return []
    count = min(len(unchanged), math.ceil(fraction * len(unchanged)))
    by_path = {shard.path: shard for shard in unchanged}
    chosen = split.rank_by_hash(seed, list(by_path))[:count]
    return sorted((by_path[path] for path in chosen), key=lambda s: s.path)


def plan(spec: TrainingJobSpec, current: SnapshotManifest, parent: int | None = None) -> WarmStart:
    """Resolve the parent version and the shards to read; raises NothingToTrain on no delta.

    `parent`, when given, is the version a run pinned at its first start.
    """
    warm = spec.warm_start
    if warm is None:
        raise ValueError("the job has no warmStart")
    store = spec.output.store_uri
    name = warm.model_name or spec.output.model_name
    versions = artifacts.list_versions(store, name)
    version = parent or warm.version or (versions[-1] if versions else None)
    if version is None or version not in versions:
        raise FileNotFoundError(f"warm start: model {name} has no finished version {version or ''} in {store}")
    uri = artifacts.version_uri(store, name, version)
    card = artifacts.load_card(uri)
    if card.spec is None:
        raise ValueError(f"warm start: {name} v{version} is an ensemble; pick a single-network version")
    delta = compute_delta(artifacts.load_snapshot(uri), current)
    if warm.delta_only:
        if not delta.fresh:
            raise NothingToTrain(f"no new or changed shards in {current.uri} since {name} v{version}")
        replay = replay_sample(delta.unchanged, warm.replay_fraction, spec.training.seed)
        shards = sorted([*delta.fresh, *replay], key=lambda s: s.path)
    else:
        replay, shards = [], list(current.shards)
    scaling = Scaling.from_tensors(artifacts.load_weights(artifacts.join(uri, artifacts.WEIGHTS)))
    return WarmStart(name, version, uri, card, scaling, delta, replay, shards, warm.learning_rate_scale)
