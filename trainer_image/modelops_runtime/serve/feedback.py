"""Ground truth after the fact: recent predictions by request id, and rolling quality.

Clients (or a labelling pipeline) post the true labels of earlier requests to the
feedback endpoint. The server keeps a bounded LRU of what each recent request was
answered with (and, in shadow mode, what the candidate said), and turns labels
into a rolling accuracy per version (classifiers) or a rolling mean absolute
error (regressors). Memory is bounded by `capacity` entries and `window` rows.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelops.api.artifact import ModelCard
from modelops_runtime.serve.errors import InvalidInput


@dataclass(slots=True)
class Served:
    """What one request was answered with; filled in as the results arrive."""

    version: str
    predictions: np.ndarray | None = None
    shadow_version: str | None = None
    shadow_predictions: np.ndarray | None = None


class PredictionLog:
    """A bounded LRU from request id to what it was served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, request_id: str, served: Served) -> None:
        if self.capacity <= 0:
            return
        entries = self._entries
        entries[request_id] = served
        entries.move_to_end(request_id)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def get(self, request_id: str) -> Served | None:
        return self._entries.get(request_id)

    def forget(self, request_id: str) -> None:
        self._entries.pop(request_id, None)


class RollingScore:
    """Mean of the last `window` per-row outcomes (1/0 correctness, or absolute error)."""

    def __init__(self, window: int) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self.total = 0

    def add(self, values: np.ndarray) -> None:
        for value in values.tolist():
            if len(self._values) == self._values.maxlen:
                self._sum -= self._values[0]
            self._values.append(float(value))
            self._sum += float(value)
            self.total += 1

    @property
    def value(self) -> float | None:
        return self._sum / len(self._values) if self._values else None


def parse_labels(item: Any, card: ModelCard) -> tuple[str, np.ndarray]:
    """(request id, labels as class indices or values) from one feedback item."""
    if not isinstance(item, dict):
        raise InvalidInput("feedback: each item must be an object with 'id' and 'labels'")
    request_id, labels = item.get("id"), item.get("labels", item.get("label"))
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInput("feedback: 'id' must be a non-empty string")
    if labels is None:
        raise InvalidInput(f"feedback for '{request_id}' is missing the field 'labels'")
    if not isinstance(labels, list):
        labels = [labels]
    if card.task != "classification":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels):
            raise InvalidInput(f"feedback for '{request_id}': 'labels' must be numbers")
        return request_id, np.asarray(labels, dtype=np.float64)
    classes = card.classes or []
    n_classes = max(card.n_outputs, 2)
    indices = []
    for label in labels:
        if isinstance(label, str) and label in classes:
            indices.append(classes.index(label))
        elif isinstance(label, int) and not isinstance(label, bool) and 0 <= label < n_classes:
            indices.append(label)
        else:
            raise InvalidInput(f"feedback for '{request_id}': unknown class {label!r}")
    return request_id, np.asarray(indices, dtype=np.int64)


def outcomes(card: ModelCard, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-row correctness (classifier) or absolute error (regressor)."""
    if card.task == "classification":
        return (predictions.reshape(-1) == labels).astype(np.float64)
    return np.abs(predictions.reshape(len(labels), -1).mean(axis=1) - labels)


def agreement(card: ModelCard, stable: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-row agreement of two versions' predictions (equal class, or values within 1%)."""
    if card.task == "classification":
        return stable.reshape(-1) == candidate.reshape(-1)
    same = np.isclose(stable, candidate, rtol=0.01, atol=1e-6)
    return same.reshape(len(same), -1).all(axis=1)
