"""Turning column chunks into examples: table rows, or windows cut from a series.

Each example carries its index within the shard, the unit that splits, worker
assignment and counting are computed from, so they never need the data itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelops.api.training import SequenceSpec, Task
from modelops_runtime.data import split
from modelops_runtime.data.readers import Chunk
from modelops_runtime.data.stats import label_key

_TABLE_LIMIT = 1_000_000


@dataclass
class Examples:
    """A run of examples: inputs, targets and their indices within the shard."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, mask: np.ndarray) -> Examples:
        return Examples(self.x[mask], self.y[mask], self.index[mask])


class LabelEncoder:
    """Label values to class indices, in the order of `classes`."""

    def __init__(self, classes: list[str]) -> None:
        self.classes = classes
        self._index = {name: i for i, name in enumerate(classes)}
        self._table: np.ndarray | None = None
        try:
            numbers = [int(name) for name in classes]
        except ValueError:
            return
        # Integer labels (the common case) map through a lookup table, without Python loops.
        if min(numbers) >= 0 and max(numbers) < _TABLE_LIMIT:
            self._table = np.full(max(numbers) + 1, -1, dtype=np.int64)
            self._table[numbers] = np.arange(len(numbers))

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self._table is not None and values.dtype.kind in "iuf":
            as_int = values.astype(np.int64)
            inside = (as_int == values) & (as_int >= 0) & (as_int < len(self._table))
            out = np.where(inside, self._table[np.where(inside, as_int, 0)], -1)
        else:
            out = np.asarray([self._index.get(label_key(v), -1) for v in values], dtype=np.int64)
        if (out < 0).any():
            unknown = sorted({label_key(v) for v in values[out < 0]})[:5]
            raise ValueError(f"labels {unknown} are not among the classes {self.classes[:20]}")
        return out


class Cursor(Protocol):
    """Reads one shard's chunks in order and emits its examples."""

    def feed(self, chunk: Chunk) -> Examples: ...


class Layout(Protocol):
    """How a dataset's rows become examples."""

    columns: list[str]
    n_features: int
    window: int | None

    def count(self, rows: int) -> int: ...

    def cursor(self) -> Cursor: ...

    def validation_mask(self, seed: int, shard_path: str, index: np.ndarray, count: int, fraction: float) -> np.ndarray: ...


class _TableCursor:
    def __init__(self, layout: TableLayout) -> None:
        self.layout = layout
        self.offset = 0

    def feed(self, chunk: Chunk) -> Examples:
        layout = self.layout
        x = np.stack([np.asarray(chunk[name], dtype=np.float32) for name in layout.features], axis=1)
        raw = chunk[layout.label]
        if layout.encoder is not None:
            y = layout.encoder.encode(raw)
        else:
            y = np.asarray(raw, dtype=np.float32).reshape(-1, 1)
        index = np.arange(self.offset, self.offset + len(x), dtype=np.int64)
        self.offset += len(x)
        return Examples(x, y, index)


@dataclass
class TableLayout:
    """One row, one example: feature columns in, the label out."""

    features: list[str]
    label: str
    encoder: LabelEncoder | None
    window: int | None = None

    @property
    def columns(self) -> list[str]:
        return [*self.features, self.label]

    @property
    def n_features(self) -> int:
        return len(self.features)

    def count(self, rows: int) -> int:
        return rows

    def cursor(self) -> Cursor:
        return _TableCursor(self)

    def validation_mask(self, seed: int, shard_path: str, index: np.ndarray, count: int, fraction: float) -> np.ndarray:
        return split.hashed_validation(seed, shard_path, index, fraction)


class _WindowCursor:
    def __init__(self, layout: WindowLayout) -> None:
        self.layout = layout
        self.tail = np.zeros(0, dtype=np.float32)
        self.start = 0  # row index of tail[0] within the shard

    def feed(self, chunk: Chunk) -> Examples:
        spec = self.layout.spec
        span = spec.window + spec.horizon
        series = np.concatenate([self.tail, np.asarray(chunk[spec.column], dtype=np.float32)])
        if len(series) < span:
            self.tail = series
            return Examples(np.zeros((0, spec.window), np.float32), np.zeros((0, spec.horizon), np.float32), np.zeros(0, np.int64))
        first = -(-self.start // spec.stride) * spec.stride  # first window start on the stride grid
        last = self.start + len(series) - span
        starts = np.arange(first, last + 1, spec.stride, dtype=np.int64)
        views = np.lib.stride_tricks.sliding_window_view(series, span)[starts - self.start]
        keep = span - 1
        self.start += len(series) - keep
        self.tail = series[len(series) - keep :].copy()
        return Examples(
            np.ascontiguousarray(views[:, : spec.window]),
            np.ascontiguousarray(views[:, spec.window :]),
            starts // spec.stride,
        )


@dataclass
class WindowLayout:
    """A window of `window` values in, the next `horizon` values out; windows stay in a shard."""

    spec: SequenceSpec

    @property
    def columns(self) -> list[str]:
        return [self.spec.column]

    @property
    def n_features(self) -> int:
        return 1

    @property
    def window(self) -> int | None:
        return self.spec.window

    def count(self, rows: int) -> int:
        span = self.spec.window + self.spec.horizon
        return max(0, (rows - span) // self.spec.stride + 1)

    def cursor(self) -> Cursor:
        return _WindowCursor(self)

    def validation_mask(self, seed: int, shard_path: str, index: np.ndarray, count: int, fraction: float) -> np.ndarray:
        return split.chronological_validation(index, count, fraction)


def make_layout(
    task: Task,
    features: list[str],
    label: str | None,
    sequence: SequenceSpec | None,
    classes: list[str] | None,
) -> Layout:
    if sequence is not None:
        return WindowLayout(sequence)
    if label is None:
        raise ValueError("data.label is required unless data.sequence is set")
    encoder = LabelEncoder(classes) if task == Task.CLASSIFICATION and classes else None
    return TableLayout(features, label, encoder)
