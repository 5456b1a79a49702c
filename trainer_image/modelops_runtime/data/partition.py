"""Which examples each worker reads.

With at least as many shards as workers, shard i goes to worker i % n, so a worker
opens only its own files. With fewer shards, every worker reads every shard and keeps
the examples whose dataset-wide position is congruent to its rank: the data is still
split evenly, at the cost of each worker decoding the shards in full.
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
    if len(shards) >= world:
        mine = [i for i in range(len(shards)) if i % world == rank]
        return Slice(
            shards=[shards[i] for i in mine],
            offsets=[offsets[i] for i in mine],
            counts=[counts[i] for i in mine],
            modulo=1,
            remainder=0,
        )
    return Slice(shards=list(shards), offsets=offsets, counts=list(counts), modulo=world, remainder=rank)
