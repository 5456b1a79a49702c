"""Which examples each worker reads.

With at least as many shards as workers, whole shards are dealt out, the biggest first
to the worker with the fewest examples so far (deterministic: ties go by shard order and
rank), so a worker opens only its own files. With fewer shards, or when shard sizes are
so uneven that a worker would get less than half of another's share, every worker
reads every shard and keeps the examples whose dataset-wide position is congruent to
its rank: the data is split evenly, at the cost of each worker decoding all shards.
Workers take equal step counts, so the smallest share sets the epoch's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelops.api.artifact import ShardInfo


@dataclass(frozen=True)
class Slice:
    """A worker's share: the shards it opens and the example filter it applies."""

    shards: list[ShardInfo]
    offsets: list[int]
    counts: list[int]
    modulo: int
    remainder: int

    def keep(self, position: int, index: np.ndarray) -> np.ndarray:
        """Mask of the examples of the `position`-th shard of this slice that are ours."""
        if self.modulo == 1:
            return np.ones(len(index), dtype=bool)
        result: np.ndarray = (self.offsets[position] + index) % self.modulo == self.remainder
        return result


def assign(shards: list[ShardInfo], counts: list[int], rank: int, world: int) -> Slice:
    """The slice of worker `rank` of `world`; `counts` are examples per shard."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
    owners = _deal(counts, world)
    if owners is not None:
        mine = [i for i, owner in enumerate(owners) if owner == rank]
        return Slice(
            shards=[shards[i] for i in mine],
            offsets=[offsets[i] for i in mine],
            counts=[counts[i] for i in mine],
            modulo=1,
            remainder=0,
        )
    return Slice(shards=list(shards), offsets=offsets, counts=list(counts), modulo=world, remainder=rank)


def _deal(counts: list[int], world: int) -> list[int] | None:
    """Owner of each shard, or None when whole shards cannot be shared out evenly enough."""
    if world == 1:
        return [0] * len(counts)
    loads = [0] * world
    owners = [-1] * len(counts)
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        if counts[i] == 0:
            continue
        target = min(range(world), key=lambda w: (loads[w], w))
        owners[i] = target
        loads[target] += counts[i]
    if min(loads) == 0 or 2 * min(loads) < max(loads):
        return None
    return owners
