"""Incremental update decisions: when to start a run, the child TrainingJob it runs, and
`plan_update`, the whole run state machine as one pure function of what was observed.

Both adapters (the cluster's reconcile and local mode) read, call `plan_update`, and
carry out the plan; neither decides anything on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modelops.api.training import TrainingJobSpec, WarmStartSpec
from modelops.api.update import (
    CurrentRun,
    DataDelta,
    IncrementalUpdateSpec,
    IncrementalUpdateStatus,
    RunRecord,
    SnapshotSummary,
    StrategyType,
    UpdatePhase,
)
from modelops.lifecycle.cron import Cron
from modelops.lifecycle.promotion import decide_promotion
from modelops.lifecycle.training_report import canonical_digest
from modelops.lifecycle.updateplan import (
    DELETING_RETRY_SECONDS,
    NEXT_PASS,
    READY,
    UPDATING,
    Blocked,
    Child,
    Comparison,
    Draft,
    Observed,
    UpdatePlan,
)


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
    tried = canonical_digest(last.snapshot_digest or "")
    if last.decision != "Promoted" and tried and tried == canonical_digest(digest):
        return last
    return None


# --------------------------------------------------------------------------------------
# The run state machine: what was observed in, what to do out
# --------------------------------------------------------------------------------------


def _draft(
    status: IncrementalUpdateStatus, now: datetime, generation: int | None, limit: int = 20
) -> Draft:
    return Draft(status.model_copy(deep=True), now, generation, limit)


def plan_blocked(blocked: Blocked) -> UpdatePlan:
    """The update cannot watch: say why, and look again later (its spec may change)."""
    draft = _draft(blocked.status, blocked.now, blocked.generation)
    draft.not_ready(blocked.reason, blocked.message)
    if draft.status.current_run is None:
        draft.status.phase = UpdatePhase.FAILED
    draft.status.observed_generation = blocked.generation
    return draft.plan(blocked.interval)


def plan_update(observed: Observed) -> UpdatePlan:
    """The next step of an IncrementalUpdate, from what was observed; no I/O.

    A run in flight advances (create its TrainingJob, follow it, evaluate the candidate,
    gate it); with no run in flight (or once it finished) the data is checked when due,
    and a run starts when the delta is large enough, the schedule fired, and the last
    run did not already try this exact data.
    """
    spec = observed.spec
    draft = _draft(observed.status, observed.now, observed.generation, spec.history_limit)
    draft.status.model_name = observed.model
    finished = False
    if draft.status.current_run is not None:
        requeue, create = _advance(observed, draft)
        if draft.status.current_run is not None:
            draft.status.observed_generation = observed.generation
            return draft.plan(requeue, create=create)
        finished = True
    changed = observed.status.observed_generation != observed.generation
    plan = _watch(observed, draft, force=finished or changed)
    plan.status.observed_generation = observed.generation
    return plan


def plan_refused(observed: Observed, plan: UpdatePlan, message: str) -> UpdatePlan:
    """The API refused the child `plan` asked for (invalid, forbidden): the run fails."""
    draft = Draft(
        plan.status.model_copy(deep=True),
        observed.now,
        observed.generation,
        observed.spec.history_limit,
        list(plan.events),
        plan.prune,
        plan.promoted,
    )
    draft.finish("Failed", message, cause="CreateFailed")
    return draft.plan(None)


def due_in(spec: IncrementalUpdateSpec, last_check: datetime | None, now: datetime) -> float:
    """Seconds until the data is checked again."""
    if last_check is None:
        return 0.0
    elapsed = (now - last_check).total_seconds()
    return max(0.0, spec.detect.interval_seconds - elapsed)


def _advance(observed: Observed, draft: Draft) -> tuple[float | None, Child | None]:
    status = draft.status
    run = status.current_run
    assert run is not None
    child = observed.child
    if child is not None and child.foreign:
        if child.deleting:
            return DELETING_RETRY_SECONDS, None  # a former update's child, on its way out
        draft.finish(
            "Failed",
            f"TrainingJob {run.training_job} exists and is not this update's run",
            cause="NameTaken",
        )
        return None, None
    if child is None and run.candidate_version is None:
        return None, "TrainingJob"
    phase = child.phase if child is not None else None
    if child is not None and phase == "Failed":
        message = child.message or "training failed"
        draft.finish("Failed", f"{run.training_job} failed: {message}", cause="TrainingFailed")
        return None, None
    if child is not None and phase != "Succeeded":
        message = f"{run.training_job}: {phase or 'Pending'}" + (
            f", {child.message}" if child.message else ""
        )
        status.phase = UpdatePhase.TRAINING
        draft.condition(READY, True, "Training", message)
        draft.condition(UPDATING, True, "Training", message)
        return None, None
    if run.candidate_version is None or run.evaluation_job is None:
        if child is None or not child.version:
            draft.finish(
                "Failed",
                f"{run.training_job} succeeded without a model version",
                cause="TrainingFailed",
            )
            return None, None
        run.candidate_version = child.version
        run.evaluation_job = observed.evaluation_name
        status.phase = UpdatePhase.EVALUATING
        message = f"{run.evaluation_job}: version {run.candidate_version} against " + (
            f"version {run.base_version}" if run.base_version else "nothing serving"
        )
        draft.condition(READY, True, "Evaluating", message)
        draft.condition(UPDATING, True, "Evaluating", message)
        draft.say("Normal", "Evaluating", message)
        return NEXT_PASS, None
    status.phase = UpdatePhase.EVALUATING
    evaluation = observed.evaluation
    if evaluation is None:
        return None, "Evaluation"
    if evaluation.failure is not None:
        draft.finish(
            "Failed",
            f"evaluation of version {run.candidate_version} failed: {evaluation.failure}",
            version=run.candidate_version,
            cause="EvaluationFailed",
        )
        return None, None
    if evaluation.result is None:
        return None, None  # still running: its events wake the adapter
    _gate(observed.spec, draft, evaluation.result)
    return None, None


def _gate(spec: IncrementalUpdateSpec, draft: Draft, result: Comparison) -> None:
    status = draft.status
    run = status.current_run
    assert run is not None and run.candidate_version is not None
    promotion = spec.promotion
    candidate = result.candidate.get(promotion.metric)
    current = result.current.get(promotion.metric) if result.current else None
    verdict = decide_promotion(candidate, current, promotion)
    version = run.candidate_version
    reason = f"version {version}: {verdict.reason}"
    if verdict.promote:
        status.promoted_version = version
        kept = [v for v in status.promoted_versions if v != version]
        status.promoted_versions = [*kept, version][-spec.history_limit :]
        draft.promoted = version
    draft.finish(
        "Promoted" if verdict.promote else "Rejected",
        reason,
        version=version,
        candidate_metric=candidate,
        current_metric=current,
    )


def _watch(observed: Observed, draft: Draft, force: bool) -> UpdatePlan:
    spec, status, now = observed.spec, draft.status, observed.now
    # A promotion in this very plan is served from now on: the data is compared with it.
    promoted = [v for v in (observed.serving, status.promoted_version) if v is not None]
    serving = max(promoted, default=None)
    interval = float(spec.detect.interval_seconds)
    status.phase = UpdatePhase.IDLE
    draft.condition(UPDATING, False, "Idle", "no update run in flight")
    wait = due_in(spec, observed.last_check, now)
    if wait > 0 and not force:
        return draft.plan(wait)
    if observed.scan_error is not None:
        draft.not_ready("DataUnavailable", observed.scan_error)
        return draft.plan(interval)
    scan = observed.scan
    if scan is None:
        return draft.plan(NEXT_PASS, scan_due=True, scan_baseline=serving)
    pending = scan.delta
    status.pending_delta = pending
    status.last_snapshot = SnapshotSummary(
        shards=scan.shards, rows=scan.rows, digest=scan.digest, observed_at=now
    )
    decision = should_start_run(spec, status, pending, now, observed.last_check, serving)
    reason = decision.reason
    if decision.start and (tried := already_tried(status, scan.digest)) is not None:
        reason = f"the last run ({tried.training_job}) on this data was {tried.decision}; waiting for new data"
    elif decision.start:
        problem = scan.schema_problem
        _start(observed, draft, pending, serving, scan.digest, announce=problem is None)
        if problem is None:
            return draft.plan(NEXT_PASS)
        # Checked before any child exists: the run is recorded as failed, naming the
        # column, and the next one waits for the data to change.
        draft.finish("Failed", problem, cause="SchemaChanged")
        reason = f"the last run failed: {problem}"
    if serving is None:
        draft.condition(
            READY,
            False,
            "WaitingForBaseline",
            f"no promoted version of model {observed.model} yet "
            f"(TrainingJob {spec.training_job_ref.name} has not succeeded)",
        )
    else:
        shards = pending.new_shards + pending.changed_shards
        draft.condition(
            READY,
            True,
            "Watching",
            f"serving version {serving}; {shards} new or changed shard(s), "
            f"{pending.new_rows} row(s) pending: {reason}",
        )
    return draft.plan(interval)


def _start(
    observed: Observed,
    draft: Draft,
    delta: DataDelta,
    serving: int | None,
    digest: str,
    announce: bool,
) -> None:
    """Record the run; its TrainingJob is created on the next pass, after this is stored."""
    status = draft.status
    status.runs += 1
    run = run_name(observed.name, status.runs)
    status.current_run = CurrentRun(
        training_job=run,
        started_at=observed.now,
        delta=delta,
        base_version=serving,
        snapshot_digest=digest,
    )
    status.phase = UpdatePhase.TRAINING
    shards = f"{delta.new_shards} new, {delta.changed_shards} changed shard(s)"
    base = f"from version {serving}" if serving is not None else "from scratch"
    message = f"{run}: {shards}, {delta.new_rows} row(s); training {base}"
    if announce:
        draft.condition(READY, True, "Training", message)
        draft.condition(UPDATING, True, "Training", message)
        draft.say("Normal", "UpdateStarted", message)
