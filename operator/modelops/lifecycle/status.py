"""Deciding whether a status write is worth making."""

from __future__ import annotations

from typing import Any

# Fields that change on every read and alone never justify a write.
VOLATILE_KEYS = frozenset({"updatedAt", "observedAt", "lastProbeTime"})


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when `desired` differs from `current` in anything but volatile timestamps."""
    changed: bool = _strip(current or {}) != _strip(desired)
    return changed


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `current` into `desired`: changed keys, and None for removed ones."""
    current = current or {}
    patch: dict[str, Any] = {k: v for k, v in desired.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in desired})
    return patch
