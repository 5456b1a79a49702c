"""Pareto front and selection of search trials: pure functions over their final metrics.

A trial dominates another when it is at least as good in every objective and better in
one. The front is the trials no other trial dominates; `order` sorts it by the user's
selection rule (one objective, or a weighted sum of objectives rescaled over the front),
then by the tie-break objective, then by the order given (so equal trials keep a stable
order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from modelops.api.search import Objective, Selection
from modelops.api.training import Mode

T = TypeVar("T")
Metrics = Callable[[T], dict[str, float]]


def _gain(value: float, mode: Mode) -> float:
    """The value turned so that higher is better."""
    return value if mode == Mode.MAX else -value


def complete(metrics: dict[str, float], goals: Sequence[Objective]) -> bool:
    """Whether every objective has a finite value."""
    return all(math.isfinite(metrics.get(g.metric, math.nan)) for g in goals)


def dominates(a: dict[str, float], b: dict[str, float], goals: Sequence[Objective]) -> bool:
    gains = [(_gain(a[g.metric], g.mode), _gain(b[g.metric], g.mode)) for g in goals]
    return all(x >= y for x, y in gains) and any(x > y for x, y in gains)


def front(items: Sequence[T], metrics: Metrics[T], goals: Sequence[Objective]) -> list[T]:
    """The items no other item dominates, in their given order; items missing an objective
    are left out."""
    scored = [item for item in items if complete(metrics(item), goals)]
    return [a for a in scored if not any(dominates(metrics(b), metrics(a), goals) for b in scored)]


def _weighted(
    items: Sequence[T], metrics: Metrics[T], goals: Sequence[Objective], weights: dict[str, float]
) -> dict[int, float]:
    """Weighted sum per item of each objective rescaled to 0..1 over `items`, 1 the best."""
    scores = {i: 0.0 for i in range(len(items))}
    for goal in goals:
        weight = weights.get(goal.metric, 0.0)
        gains = [_gain(metrics(item)[goal.metric], goal.mode) for item in items]
        low, high = min(gains), max(gains)
        for i, gain in enumerate(gains):
            scores[i] += weight * ((gain - low) / (high - low) if high > low else 1.0)
    return scores


def order(
    items: Sequence[T], metrics: Metrics[T], goals: Sequence[Objective], selection: Selection | None
) -> list[T]:
    """`items` (with every objective) best first by `selection`; without one, by the first
    objective and then the others in turn."""
    if selection is None:
        keys = [[-_gain(metrics(item)[g.metric], g.mode) for g in goals] for item in items]
    else:
        tie = selection.tie_break
        if selection.weights is not None:
            scores = _weighted(items, metrics, goals, selection.weights)
            primary = [-scores[i] for i in range(len(items))]
        else:
            metric = selection.metric or goals[0].metric
            primary = [-_gain(metrics(item)[metric], selection.mode) for item in items]
        keys = [
            [primary[i], -_gain(metrics(item)[tie.metric], tie.mode)]
            for i, item in enumerate(items)
        ]
    ranked = sorted(range(len(items)), key=lambda i: (keys[i], i))
    return [items[i] for i in ranked]


STATES = ("running", "stoppedEarly", "finished", "failed")


def summarise(
    entries: list[dict[str, Any]], goals: Sequence[Objective], selection: Selection | None
) -> dict[str, Any]:
    """The search part of the progress document from its trial entries ({id, params,
    epoch, metrics, state}): each entry's `pareto` flag (the front of the finished trials;
    with one objective, the best of them), `trialCounts` and `best`."""

    def metrics(entry: dict[str, Any]) -> dict[str, float]:
        found: dict[str, float] = entry["metrics"]
        return found

    finished = [e for e in entries if e["state"] == "finished"]
    chosen = order(front(finished, metrics, goals), metrics, goals, selection)
    on_front = {id(e) for e in (chosen if len(goals) > 1 else chosen[:1])}
    trials = [{**e, "pareto": id(e) in on_front} for e in entries]
    counts = {state: sum(e["state"] == state for e in entries) for state in STATES}
    out: dict[str, Any] = {"trials": trials, "trialCounts": counts}
    scored = [e for e in entries if complete(metrics(e), goals)]
    leader = chosen[:1] or order(scored, metrics, goals, selection)[:1]
    if leader:
        out["best"] = {"trial": leader[0]["id"], "metrics": leader[0]["metrics"]}
    return out
