"""A search's status from the runtime's progress document: trials by state, the best few.

The document's `trials` list (id, params, epoch, metrics, and from newer runtimes
`state` and `pareto`), `trialCounts` and `best` are read tolerantly: a runtime one
release older writes no state, counts or best, and a malformed entry is skipped rather
than failing the whole status. Sizes are bounded whatever the document holds: at most
`TOP_ROWS` rows, `MAX_PARAMS` parameters a row cut to `MAX_VALUE` characters, and only
the search's objective metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from modelops.api.recipe import Mode
from modelops.api.search import SearchSpec
from modelops.api.training_status import SearchStatus, TrialCounts, TrialRow, TrialState

TOP_ROWS = 10
MAX_PARAMS = 16
MAX_VALUE = 64
_ID_LENGTH = 128
# The states are also the keys of `trialCounts`.
_COUNT_KEYS = tuple(state.value for state in TrialState)


def _goals(search: SearchSpec) -> list[tuple[str, Mode]]:
    return [(goal.metric, goal.mode) for goal in search.goals()]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _state(raw: Mapping[str, Any], finished: bool) -> TrialState | None:
    try:
        return TrialState(str(raw.get("state")))
    except ValueError:
        # Older runtimes: a trial listed in the final document ran to its end; one that has
        # reported during the search is running.
        if finished:
            return TrialState.FINISHED
        return TrialState.RUNNING if _epoch(raw) > 0 else None


def _epoch(raw: Mapping[str, Any]) -> int:
    # The final document's records count `epochs`; the running one's trials their `epoch`.
    for key in ("epoch", "epochs"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def _params(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    items = sorted((str(k), str(v)) for k, v in raw.items())[:MAX_PARAMS]
    return {k[:_ID_LENGTH]: v[:MAX_VALUE] for k, v in items}


def _row(raw: Any, goals: list[tuple[str, Mode]], finished: bool) -> TrialRow | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
        return None
    pareto = raw.get("pareto")
    return TrialRow(
        id=raw["id"][:_ID_LENGTH],
        state=_state(raw, finished),
        epoch=_epoch(raw),
        params=_params(raw.get("params")),
        metrics=_metrics(raw.get("metrics"), goals),
        pareto=pareto if isinstance(pareto, bool) else None,
    )


def _rank_key(row: TrialRow, metric: str, mode: Mode) -> tuple[bool, float]:
    # The runtime's front (the best, with one objective) first, then by the first objective.
    value = row.metrics[metric]
    return (row.pareto is False, -value if mode == Mode.MAX else value)


def _counts(document: Mapping[str, Any], rows: list[TrialRow]) -> TrialCounts:
    given = document.get("trialCounts")
    if isinstance(given, Mapping):
        values = {
            key: value
            for key in _COUNT_KEYS
            if isinstance(value := given.get(key), int) and not isinstance(value, bool)
        }
        if values:
            return TrialCounts.model_validate({k: max(0, v) for k, v in values.items()})
    tally = dict.fromkeys(_COUNT_KEYS, 0)
    for row in rows:
        if row.state is not None:
            tally[row.state.value] += 1
    return TrialCounts.model_validate(tally)


def _metrics(raw: Any, goals: list[tuple[str, Mode]]) -> dict[str, float]:
    """The objective metrics in `raw`, finite numbers only."""
    if not isinstance(raw, Mapping):
        return {}
    return {name: v for name, _ in goals if (v := _number(raw.get(name))) is not None}


def _best(
    document: Mapping[str, Any],
    rows: list[TrialRow],
    ranked: list[TrialRow],
    goals: list[tuple[str, Mode]],
) -> TrialRow | None:
    """The document's `best` when it names a trial (with several objectives, the runtime's
    pick from the front); else the top of the ranking."""
    given = document.get("best")
    if isinstance(given, Mapping) and isinstance(given.get("trial"), str):
        trial = given["trial"][:_ID_LENGTH]
        named = next((r for r in rows if r.id == trial), None) or TrialRow(id=trial)
        if named.metrics:
            return named
        return named.model_copy(update={"metrics": _metrics(given.get("metrics"), goals)})
    return ranked[0] if ranked else None


def summary_line(counts: TrialCounts, planned: int) -> str:
    """`9/16 done (6 stopped early, 1 failed), 2 running` for the printer column."""
    done = counts.finished + counts.stopped_early + counts.failed
    bits = [
        f"{n} {label}"
        for n, label in ((counts.stopped_early, "stopped early"), (counts.failed, "failed"))
        if n
    ]
    line = f"{done}/{planned} done" + (f" ({', '.join(bits)})" if bits else "")
    return line + (f", {counts.running} running" if counts.running else "")


def search_status(document: Mapping[str, Any], search: SearchSpec) -> SearchStatus | None:
    """The status of the search in a progress document; None when it says nothing of one."""
    trials = document.get("trials")
    if not isinstance(trials, list) and not isinstance(document.get("trialCounts"), Mapping):
        return None
    goals = _goals(search)
    finished = document.get("phase") == "finished"
    listed = trials if isinstance(trials, list) else []
    rows = [row for raw in listed if (row := _row(raw, goals, finished)) is not None]
    metric, mode = goals[0]
    ranked = sorted(
        (r for r in rows if metric in r.metrics), key=lambda r: _rank_key(r, metric, mode)
    )
    counts = _counts(document, rows)
    return SearchStatus(
        summary=summary_line(counts, search.trials),
        trial_counts=counts,
        best=_best(document, rows, ranked, goals),
        top=ranked[:TOP_ROWS],
    )


def search_from_text(text: str | None, search: SearchSpec) -> SearchStatus | None:
    """`search_status` of a progress document as JSON text (the head pod's annotation)."""
    if not text:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    return search_status(document, search) if isinstance(document, dict) else None
