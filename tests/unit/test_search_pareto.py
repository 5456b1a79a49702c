"""The Pareto front of search trials and the rules that pick the stored version from it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modelops.api.search import Objective, Selection
from modelops.api.training import Mode
from modelops_runtime.train import pareto

ACC = Objective(metric="val_accuracy", mode=Mode.MAX)
SIZE = Objective(metric="params", mode=Mode.MIN)
GOALS = [ACC, SIZE]


def trial(name: str, accuracy: float, params: float, state: str = "finished") -> dict[str, Any]:
    return {
        "id": name,
        "params": {},
        "epoch": 3,
        "metrics": {"val_accuracy": accuracy, "params": params},
        "state": state,
    }


def metrics(t: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = t["metrics"]
    return found


TRIALS = [
    trial("big", 0.97, 9000),
    trial("mid", 0.95, 2000),
    trial("worse-mid", 0.94, 2500),  # dominated by mid
    trial("small", 0.80, 300),
    trial("twin-small", 0.80, 300),  # equal to small: neither dominates
]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for t in items]


def test_the_front_keeps_the_non_dominated_trials_in_order() -> None:
    assert ids(pareto.front(TRIALS, metrics, GOALS)) == ["big", "mid", "small", "twin-small"]


def test_a_trial_missing_an_objective_is_not_on_the_front() -> None:
    partial = {"id": "partial", "metrics": {"val_accuracy": 0.99}}
    assert "partial" not in ids(pareto.front([*TRIALS, partial], metrics, GOALS))


def test_selection_by_one_metric_breaks_ties_by_the_tie_break() -> None:
    rule = Selection(metric="val_accuracy", mode=Mode.MIN, tie_break=SIZE)
    twins = [trial("a", 0.8, 500), trial("b", 0.8, 300), trial("c", 0.9, 100)]
    assert ids(pareto.order(twins, metrics, GOALS, rule)) == ["b", "a", "c"]


def test_weighted_selection_rescales_each_objective_over_the_front() -> None:
    front = pareto.front(TRIALS, metrics, GOALS)
    by_accuracy = Selection(weights={"val_accuracy": 1.0, "params": 0.1}, tie_break=SIZE)
    by_size = Selection(weights={"val_accuracy": 0.1, "params": 1.0}, tie_break=ACC)
    balanced = Selection(weights={"val_accuracy": 1.0, "params": 1.0}, tie_break=ACC)
    assert ids(pareto.order(front, metrics, GOALS, by_accuracy))[0] == "big"
    assert ids(pareto.order(front, metrics, GOALS, by_size))[:2] == ["small", "twin-small"]
    # mid: accuracy (0.95-0.80)/(0.17) + size (9000-2000)/(8700): the best compromise.
    assert ids(pareto.order(front, metrics, GOALS, balanced))[0] == "mid"


def test_summary_marks_the_front_counts_states_and_names_the_best() -> None:
    entries = [
        *TRIALS[:3],
        trial("stopped", 0.5, 100, "stoppedEarly"),
        trial("run", 0.99, 10, "running"),
    ]
    rule = Selection(metric="val_accuracy", mode=Mode.MAX, tie_break=SIZE)
    summary = pareto.summarise(entries, GOALS, rule)
    assert {t["id"]: t["pareto"] for t in summary["trials"]} == {
        "big": True,
        "mid": True,
        "worse-mid": False,
        "stopped": False,
        "run": False,
    }
    assert summary["trialCounts"] == {"running": 1, "stoppedEarly": 1, "finished": 3, "failed": 0}
    assert summary["best"] == {"trial": "big", "metrics": TRIALS[0]["metrics"]}


def test_with_one_objective_only_the_best_finished_trial_is_marked() -> None:
    summary = pareto.summarise(TRIALS[:3], [ACC], None)
    assert [t["pareto"] for t in summary["trials"]] == [True, False, False]
    before_any_finished = pareto.summarise([trial("run", 0.9, 1, "running")], [ACC], None)
    assert before_any_finished["best"]["trial"] == "run"


points = st.lists(st.tuples(st.floats(0, 1), st.integers(1, 10_000)), min_size=1, max_size=12)


@given(points)
def test_the_front_is_exactly_the_undominated_set(values: list[tuple[float, int]]) -> None:
    items = [trial(str(i), a, p) for i, (a, p) in enumerate(values)]
    front = pareto.front(items, metrics, GOALS)
    assert front, "a non-empty set has a non-empty front"
    for item in items:
        dominated = any(pareto.dominates(metrics(o), metrics(item), GOALS) for o in items)
        assert (item in front) != dominated
    # Whatever the rule, the first pick is on the front and best in its primary metric.
    rule = Selection(metric="params", mode=Mode.MIN, tie_break=ACC)
    best = pareto.order(front, metrics, GOALS, rule)[0]
    assert best["metrics"]["params"] == min(t["metrics"]["params"] for t in items)
