"""Which loaded version answers a request: stable, a weighted canary, or a shadow.

A Routing is immutable; the data plane swaps the whole object in one assignment
on the event loop, so a request sees either the old split or the new one, never
a mix. With a routing key (header `x-routing-key`, else `x-request-id`) the
choice is a hash of the key, so a client that sends the same key stays on the
same version while the weight is unchanged (sticky canary); without one it is
random.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from modelops_runtime.serve.errors import InvalidInput


def key_fraction(key: str) -> float:
    """A stable, uniform number in [0, 1) for a routing key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class Routing:
    """The traffic split; weight is the candidate's percent of live traffic."""

    stable: str
    candidate: str | None = None
    weight: float = 0.0
    shadow: bool = False

    def pick(self, key: str | None) -> tuple[str, str | None]:
        """(version that answers, version that gets a mirrored copy or None)."""
        if self.candidate is None:
            return self.stable, None
        if self.shadow:
            return self.stable, self.candidate
        if self.weight <= 0.0:
            return self.stable, None
        fraction = key_fraction(key) if key else random.random()
        return (self.candidate if fraction * 100.0 < self.weight else self.stable), None

    def versions(self) -> set[str]:
        return {self.stable} | ({self.candidate} if self.candidate else set())

    def weights(self) -> dict[str, float]:
        """Percent of answered traffic per version (a shadow answers none)."""
        if self.candidate is None or self.shadow:
            return {self.stable: 100.0, **({self.candidate: 0.0} if self.candidate else {})}
        return {self.stable: 100.0 - self.weight, self.candidate: self.weight}

    def to_json(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "candidate": self.candidate,
            "weight": self.weight,
            "shadow": self.shadow,
        }


def _label(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise InvalidInput(f"routing: '{field}' must be a version (string or integer)")
    return str(value)


def parse_routing(payload: dict[str, Any], current: Routing) -> Routing:
    """A new Routing from an admin body; omitted fields keep their current value."""
    unknown = set(payload) - {"stable", "candidate", "weight", "shadow"}
    if unknown:
        raise InvalidInput(f"routing: unknown fields {sorted(unknown)}")
    stable = _label(payload.get("stable", current.stable), "stable")
    candidate_raw = payload.get("candidate", current.candidate)
    candidate = None if candidate_raw is None else _label(candidate_raw, "candidate")
    weight = payload.get("weight", current.weight if candidate else 0.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 100:
        raise InvalidInput("routing: 'weight' must be a number from 0 to 100 (percent)")
    shadow = payload.get("shadow", current.shadow if candidate else False)
    if not isinstance(shadow, bool):
        raise InvalidInput("routing: 'shadow' must be true or false")
    if candidate is None and (weight or shadow):
        raise InvalidInput("routing: 'weight' and 'shadow' need a 'candidate'")
    if shadow and weight:
        raise InvalidInput("routing: a shadow gets mirrored traffic only; set 'weight' to 0")
    if candidate == stable:
        raise InvalidInput("routing: 'candidate' must differ from 'stable'")
    return Routing(stable, candidate, float(weight), shadow)
