"""Statistics gathered in one streaming pass: feature moments and the set of class labels."""

from __future__ import annotations

import numpy as np

_MIN_STD = 1e-6


class RunningMoments:
    """Mean and variance per column, merged chunk by chunk (Chan et al.), in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        n = values.shape[0]
        if n == 0:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as float32; a constant column gets std 1 so scaling leaves it at 0."""
        if self.mean is None or self.m2 is None or self.count == 0:
            raise ValueError("no rows to compute statistics from")
        std = np.sqrt(self.m2 / self.count)
        std = np.where(std < _MIN_STD, 1.0, std)
        return self.mean.astype(np.float32), std.astype(np.float32)


def label_key(value: object) -> str:
    """The string form of a label: integral numbers print without a fraction (3.0 → "3")."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)
