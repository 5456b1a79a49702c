"""Pure incremental-update decisions: the promotion gate, run starts, child specs, delta."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.api.training import Mode, TrainingJob
from modelops.api.update import (
    CurrentRun,
    DataDelta,
    IncrementalUpdate,
    IncrementalUpdateStatus,
    PromotionSpec,
    RunRecord,
)
from modelops.lifecycle.cron import Cron
from modelops.lifecycle.delta import compute_delta
from modelops.lifecycle.promotion import decide_promotion
from modelops.lifecycle.update import (
    child_training_spec,
    record_run,
    run_name,
    should_start_run,
)
from tests.unit.manifests import incremental_update, mutate, training_job

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _update(**changes: object) -> IncrementalUpdate:
    document = incremental_update()
    for path, value in changes.items():
        document = mutate(document, path.replace("__", "."), value)
    return IncrementalUpdate.model_validate(document)


# --- the promotion gate ---------------------------------------------------------------


def test_gate_promotes_within_the_allowed_regression() -> None:
    spec = PromotionSpec(metric="accuracy", mode=Mode.MAX, max_regression=0.01)
    assert decide_promotion(0.955, 0.96, spec).promote
    result = decide_promotion(0.94, 0.96, spec)
    assert not result.promote
    assert "regresses by 0.0200" in result.reason and "accuracy" in result.reason


def test_gate_for_lower_is_better_metrics() -> None:
    spec = PromotionSpec(metric="mse", mode=Mode.MIN, max_regression=0.0)
    assert decide_promotion(0.9, 1.0, spec).promote
    assert not decide_promotion(1.1, 1.0, spec).promote


def test_gate_requires_the_minimum_improvement_when_set() -> None:
    spec = PromotionSpec(metric="accuracy", min_improvement=0.01)
    assert not decide_promotion(0.965, 0.96, spec).promote
    assert decide_promotion(0.971, 0.96, spec).promote


def test_gate_without_a_serving_version_or_candidate_metric() -> None:
    spec = PromotionSpec()
    assert decide_promotion(0.5, None, spec).promote
    assert not decide_promotion(None, 0.5, spec).promote
    assert not decide_promotion(float("nan"), 0.5, spec).promote


@given(
    current=st.floats(0, 1),
    candidate=st.floats(0, 1),
    regression=st.floats(0, 0.5),
)
def test_gate_is_monotone_in_the_candidate(
    current: float, candidate: float, regression: float
) -> None:
    spec = PromotionSpec(metric="accuracy", mode=Mode.MAX, max_regression=regression)
    if decide_promotion(candidate, current, spec).promote:
        assert decide_promotion(min(1.0, candidate + 0.01), current, spec).promote
    assert decide_promotion(current, current, spec).promote


# --- starting runs --------------------------------------------------------------------


def test_run_starts_only_when_thresholds_are_met() -> None:
    update = _update(spec__detect={"minNewShards": 2})
    status = IncrementalUpdateStatus()
    assert not should_start_run(update.spec, status, DataDelta(new_shards=1), NOW, None, 1).start
    assert should_start_run(
        update.spec, status, DataDelta(new_shards=1, changed_shards=1), NOW, None, 1).start
    by_rows = _update(spec__detect={"minNewShards": 0, "minNewRows": 1000})
    assert not should_start_run(by_rows.spec, status, DataDelta(new_rows=999), NOW, None, 1).start
    assert should_start_run(by_rows.spec, status, DataDelta(new_rows=1000), NOW, None, 1).start


def test_never_more_than_one_run_and_suspend_wins() -> None:
    update = _update()
    busy = IncrementalUpdateStatus(
        current_run=CurrentRun(training_job="digits-run-1", started_at=NOW)
    )
    decision = should_start_run(update.spec, busy, DataDelta(new_shards=5), NOW, None, 1)
    assert not decision.start and "digits-run-1" in decision.reason
    suspended = _update(spec__suspend=True)
    decision = should_start_run(
        suspended.spec, IncrementalUpdateStatus(), DataDelta(new_shards=5), NOW, None, 1)
    assert not decision.start and decision.reason == "suspended"


def test_schedule_gates_the_start() -> None:
    update = _update(spec__detect={"minNewShards": 1, "schedule": "0 3 * * *"})
    delta = DataDelta(new_shards=1)
    status = IncrementalUpdateStatus()
    at_noon = should_start_run(update.spec, status, delta, NOW, NOW - timedelta(minutes=1), 1)
    assert not at_noon.start and "schedule" in at_noon.reason
    three = NOW.replace(hour=3, minute=0)
    assert should_start_run(update.spec, status, delta, three, three - timedelta(seconds=30), 1).start


# --- the child TrainingJob ------------------------------------------------------------


def test_fine_tune_child_warm_starts_from_the_promoted_version() -> None:
    recipe = TrainingJob.model_validate(training_job()).spec
    update = _update()
    child = child_training_spec(recipe, update.spec, promoted_version=3)
    assert child.warm_start is not None
    assert child.warm_start.version == 3
    assert child.warm_start.model_name == "digits"
    assert child.warm_start.delta_only
    assert child.warm_start.replay_fraction == update.spec.strategy.replay_fraction
    assert child.training.epochs == update.spec.strategy.epochs
    assert child.training.schedule.warmup_epochs < child.training.epochs
    assert child.data == recipe.data and child.model == recipe.model
    assert recipe.warm_start is None, "the recipe itself is untouched"


def test_full_retrain_or_nothing_promoted_trains_from_scratch() -> None:
    recipe = TrainingJob.model_validate(training_job()).spec
    full = _update(spec__strategy={"type": "fullRetrain"})
    assert child_training_spec(recipe, full.spec, promoted_version=3).warm_start is None
    first = child_training_spec(recipe, _update().spec, promoted_version=None)
    assert first.warm_start is None and first.training.epochs == recipe.training.epochs


def test_history_is_bounded_and_names_are_deterministic() -> None:
    status = IncrementalUpdateStatus()
    for index in range(5):
        record = RunRecord(
            training_job=run_name("digits", index),
            decision="Rejected",
            reason="r",
            finished_at=NOW,
        )
        status = status.model_copy(update={"history": record_run(status, record, limit=3)})
    assert [r.training_job for r in status.history] == [
        "digits-run-2",
        "digits-run-3",
        "digits-run-4",
    ]


# --- cron and delta -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("*/15 * * * *", datetime(2026, 1, 1, 10, 30), True),
        ("*/15 * * * *", datetime(2026, 1, 1, 10, 31), False),
        ("0 9-17 * * 1-5", datetime(2026, 11, 30, 9, 0), True),  # a Monday
        ("0 9-17 * * 1-5", datetime(2026, 11, 29, 9, 0), False),  # a Sunday
        ("0 0 1 * 0", datetime(2026, 11, 29, 0, 0), True),  # day OR weekday
        ("30 2 1,15 6 *", datetime(2026, 6, 15, 2, 30), True),
    ],
)
def test_cron_matches(expression: str, moment: datetime, expected: bool) -> None:
    assert Cron.parse(expression).matches(moment) is expected


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *"])
def test_cron_rejects_bad_expressions(bad: str) -> None:
    with pytest.raises(ValueError):
        Cron.parse(bad)


def test_cron_fired_between_finds_a_yearly_time_quickly() -> None:
    cron = Cron.parse("0 0 1 1 *")
    assert cron.fired_between(datetime(2026, 2, 1), datetime(2027, 1, 1, 0, 0))
    assert not cron.fired_between(datetime(2026, 2, 1), datetime(2026, 12, 31, 23, 59))


def _shard(path: str, digest: str, rows: int = 10) -> ShardInfo:
    return ShardInfo(path=path, size=rows * 8, sha256=digest, rows=rows)


def test_delta_counts_new_changed_and_deleted_shards() -> None:
    old = SnapshotManifest(
        uri="file:///d",
        format="parquet",
        shards=[_shard("a", "1"), _shard("b", "2"), _shard("c", "3")],
    )
    new = SnapshotManifest(
        uri="file:///d",
        format="parquet",
        shards=[_shard("a", "1"), _shard("b", "9", 20), _shard("d", "4")],
    )
    delta = compute_delta(old, new)
    assert [s.path for s in delta.new] == ["d"]
    assert [s.path for s in delta.changed] == ["b"]
    assert [s.path for s in delta.deleted] == ["c"]
    assert [s.path for s in delta.unchanged] == ["a"]
    assert delta.fresh_rows == 30
    assert compute_delta(None, new).fresh_rows == 40
    assert compute_delta(new, new).is_empty
