"""Deciding whether a status write is worth making."""

from __future__ import annotations

import math
from typing import Any

# Fields that change on every read and alone never justify a write.
VOLATILE_KEYS = frozenset({"updatedAt", "observedAt", "lastProbeTime"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def finite(value: Any) -> Any:
    """`value` as JSON can carry it: NaN and ±inf left out of objects, null in arrays.

    A diverged training reports NaN metrics; JSON has no NaN, so the API server would
    refuse the whole status (and the job would never end). A missing metric reads as
    "not known", which is what a NaN is.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {
            k: finite(v)
            for k, v in value.items()
            if not (isinstance(v, float) and not math.isfinite(v))
        }
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when `desired` differs from `current` in anything but volatile timestamps."""
    changed: bool = _strip(finite(current or {})) != _strip(finite(desired))
    return changed


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `current` into `desired`: changed keys, and None for removed ones.

    Values are made finite first, so the patch always serialises as strict JSON.
    """
    current = current or {}
    desired = finite(desired)
    patch: dict[str, Any] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch
