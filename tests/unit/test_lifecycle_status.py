"""Conditions keep their transition time; status writes happen only on real change."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from modelops.api.base import ConditionStatus
from modelops.lifecycle.conditions import get_condition, is_true, set_condition
from modelops.lifecycle.status import status_changed, status_patch

T0 = datetime(2026, 11, 29, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_transition_time_changes_only_when_status_flips() -> None:
    conditions = set_condition([], "Ready", False, "Provisioning", "waiting", T0, 1)
    conditions = set_condition(conditions, "Ready", False, "Provisioning", "still", T1, 2)
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == T0
    assert ready.message == "still" and ready.observed_generation == 2
    conditions = set_condition(conditions, "Ready", True, "Running", "up", T1)
    ready = get_condition(conditions, "Ready")
    assert ready is not None and ready.status == ConditionStatus.TRUE
    assert ready.last_transition_time == T1
    assert is_true(conditions, "Ready") and not is_true(conditions, "Degraded")


def test_other_conditions_keep_their_order() -> None:
    conditions = set_condition([], "Available", True, "A", "", T0)
    conditions = set_condition(conditions, "Progressing", True, "P", "", T0)
    conditions = set_condition(conditions, "Available", False, "B", "", T1)
    assert [c.type for c in conditions] == ["Available", "Progressing"]


def test_status_changed_ignores_volatile_timestamps() -> None:
    before = {"phase": "Running", "progress": {"epoch": 3, "updatedAt": "t0"}}
    assert not status_changed(
        before, {"phase": "Running", "progress": {"epoch": 3, "updatedAt": "t1"}}
    )
    assert status_changed(before, {"phase": "Running", "progress": {"epoch": 4, "updatedAt": "t1"}})
    assert status_changed(None, {"phase": "Pending"})


def test_status_patch_sets_changed_and_removes_missing_keys() -> None:
    patch = status_patch(
        {"phase": "Running", "message": "x", "workers": 1}, {"phase": "Failed", "workers": 1}
    )
    assert patch == {"phase": "Failed", "message": None}


def test_non_finite_metrics_never_reach_the_api_server() -> None:
    """Finding 5: a diverged training (NaN/inf metrics) still gets its status written."""
    nan, inf = float("nan"), float("inf")
    desired = {
        "phase": "Succeeded",
        "modelVersion": {"version": 3, "metrics": {"val_loss": nan, "val_accuracy": 0.5}},
        "progress": {"metrics": {"loss": -inf}, "history": [1.0, inf, 2.0]},
    }
    patch = status_patch({"phase": "Running"}, desired)
    json.dumps(patch, allow_nan=False)  # strict JSON, as the API server reads it
    assert patch["modelVersion"]["metrics"] == {"val_accuracy": 0.5}
    assert patch["progress"] == {"metrics": {}, "history": [1.0, None, 2.0]}
    # Once written, the same NaN status is not a change (NaN != NaN would write forever).
    assert not status_changed(patch | {"phase": "Succeeded"}, desired)
