"""The one shape of a Kubernetes Event a decision asks to post (every resource's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventNote:
    """An Event to post on the object a decision was made for."""

    type: str  # Normal or Warning
    reason: str
    message: str
