"""Incremental update decisions: when to start a run, and the child TrainingJob it runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modelops.api.training import TrainingJobSpec, WarmStartSpec
from modelops.api.update import (
    DataDelta,
    IncrementalUpdateSpec,
    IncrementalUpdateStatus,
    RunRecord,
    StrategyType,
)
from modelops.lifecycle.cron import Cron


@dataclass(frozen=True)
class RunDecision:
    start: bool
    reason: str


def thresholds_met(delta: DataDelta, spec: IncrementalUpdateSpec) -> bool:
    """Any threshold set above zero and reached by new plus changed data."""
    detect = spec.detect
    shards = delta.new_shards + delta.changed_shards
    by_shards = detect.min_new_shards > 0 and shards >= detect.min_new_shards
    by_rows = detect.min_new_rows > 0 and delta.new_rows >= detect.min_new_rows
    return by_shards or by_rows


def should_start_run(
    spec: IncrementalUpdateSpec,
    status: IncrementalUpdateStatus,
    delta: DataDelta,
    now: datetime,
    last_check: datetime | None,
    promoted_version: int | None,
) -> RunDecision:
    """Start a run only when a version is promoted (the recipe's first training is the
    baseline), none is in flight, the delta is large enough, and the schedule (if any)
    fired since the last check."""
    if spec.suspend:
        return RunDecision(False, "suspended")
    if promoted_version is None:
        return RunDecision(False, "waiting for a first promoted version to update")
    if status.current_run is not None:
        return RunDecision(False, f"run {status.current_run.training_job} in flight")
    if not thresholds_met(delta, spec):
        shards = delta.new_shards + delta.changed_shards
        return RunDecision(
            False, f"delta of {shards} shard(s), {delta.new_rows} row(s) below the thresholds"
        )
    if spec.detect.schedule:
        since = last_check or now
        if not Cron.parse(spec.detect.schedule).fired_between(since, now):
            return RunDecision(False, f"waiting for schedule {spec.detect.schedule}")
    return RunDecision(True, "new data reached the thresholds")


def child_training_spec(
    recipe: TrainingJobSpec, spec: IncrementalUpdateSpec, promoted_version: int | None
) -> TrainingJobSpec:
    """The TrainingJob spec of an update run, derived from the recipe.

    A fine-tune warm-starts from the promoted version on the delta plus replay; with
    nothing promoted yet, or a full-retrain strategy, it trains from scratch on all data.
    """
    strategy = spec.strategy
    if strategy.type == StrategyType.FULL_RETRAIN or promoted_version is None:
        return recipe.model_copy(update={"warm_start": None, "search": None}, deep=True)
    training = recipe.training.model_copy(update={"epochs": strategy.epochs}, deep=True)
    training.early_stopping = None  # few epochs on a small delta: let them all run
    if training.schedule.warmup_epochs >= strategy.epochs:
        training.schedule = training.schedule.model_copy(update={"warmup_epochs": 0})
    warm = WarmStartSpec(
        model_name=recipe.output.model_name,
        version=promoted_version,
        delta_only=True,
        replay_fraction=strategy.replay_fraction,
        learning_rate_scale=strategy.learning_rate_scale,
    )
    return recipe.model_copy(
        update={"training": training, "warm_start": warm, "search": None}, deep=True
    )


def record_run(status: IncrementalUpdateStatus, record: RunRecord, limit: int) -> list[RunRecord]:
    """History with `record` appended, keeping the newest `limit` runs."""
    return [*status.history, record][-limit:]


def run_name(update_name: str, sequence: int) -> str:
    """Deterministic child name, so a restarted operator finds the run it started."""
    return f"{update_name}-run-{sequence}"[:253]


def already_tried(status: IncrementalUpdateStatus, digest: str) -> RunRecord | None:
    """The last run, when it ran on exactly this data and did not promote: trying again
    would repeat it, so a new run waits for the data to change."""
    if not status.history:
        return None
    last = status.history[-1]
    if last.decision != "Promoted" and last.snapshot_digest == digest:
        return last
    return None
