"""A bounded shuffle buffer: rows are mixed within a window of `capacity` rows, never more."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from modelops_runtime.data.examples import Examples

Batch = tuple[np.ndarray, np.ndarray]


class ShuffleBuffer:
    """Collects examples until `capacity` rows, then emits them as shuffled batches.

    Shuffling whole blocks keeps the work vectorised; the rows left over (fewer than a
    batch) stay and mix with the next block, so no row is dropped along the way.
    """

    def __init__(self, capacity: int, batch_size: int, rng: np.random.Generator) -> None:
        self.capacity = max(capacity, batch_size)
        self.batch_size = batch_size
        self.rng = rng
        self._parts: list[Examples] = []
        self._rows = 0

    def push(self, examples: Examples) -> Iterator[Batch]:
        if len(examples):
            self._parts.append(examples)
            self._rows += len(examples)
        if self._rows >= self.capacity:
            yield from self._drain(final=False)

    def finish(self) -> Iterator[Batch]:
        yield from self._drain(final=True)

    def _drain(self, final: bool) -> Iterator[Batch]:
        if not self._parts:
            return
        x = np.concatenate([part.x for part in self._parts])
        y = np.concatenate([part.y for part in self._parts])
        self._parts, self._rows = [], 0
        order = self.rng.permutation(len(x))
        x, y = x[order], y[order]
        full = len(x) - len(x) % self.batch_size
        for start in range(0, full, self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]
        if full < len(x):
            rest = Examples(x[full:], y[full:], np.zeros(len(x) - full, dtype=np.int64))
            if final:
                yield rest.x, rest.y
            else:
                self._parts, self._rows = [rest], len(rest)
