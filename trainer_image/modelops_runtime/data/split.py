"""Deterministic choices made by hashing, so they are stable across runs, workers and resumes.

The validation split of tabular data hashes (seed, shard path, row index): a row stays on
its side of the split whichever worker reads it, in whatever order, and adding a shard
never moves rows of the others. Replay sampling of warm starts ranks shards the same way.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash, vectorised."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def key(*parts: str | int) -> int:
    """A stable 64-bit key of strings and numbers (Python's hash() is salted per process)."""
    text = "\0".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def uniform(base: int, indices: np.ndarray) -> np.ndarray:
    """A number in [0, 1) for each index, fixed by `base` (a key)."""
    mixed = _mix(_mix(np.asarray(indices, dtype=np.uint64) ^ np.uint64(base)))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hashed_validation(seed: int, shard_path: str, indices: np.ndarray, fraction: float) -> np.ndarray:
    """True for the rows of a shard that belong to the validation split."""
    return uniform(key("split", seed, shard_path), indices) < fraction


def chronological_validation(indices: np.ndarray, count: int, fraction: float) -> np.ndarray:
    """True for the last `fraction` of a shard's windows: a series validates on its future."""
    cutoff = int(np.floor(count * (1.0 - fraction)))
    return np.asarray(indices) >= cutoff


def rank_by_hash(seed: int, names: list[str]) -> list[str]:
    """`names` in a pseudo-random order fixed by the seed."""
    return sorted(names, key=lambda name: key("rank", seed, name))
