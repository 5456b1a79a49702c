"""Pure decisions of a TrainingJob: from what is observed to what should be, and what to say.

One attempt is one Ray cluster (a head pod and its workers). The operator observes the
pods of the job and its current status; `plan` returns the next status, which pods to
create or delete, the events to post and when to look again. Nothing here does I/O,
so every rule is a unit test away, and a restarted operator reaches the same decision
from the same observation (level-based: no decision depends on having seen an edge).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from modelops.api.training import (
    Attempt,
    ModelVersionRef,
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingPhase,
    WorkerCounts,
)
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.events import EventNote
from modelops.lifecycle.lineage import describe
from modelops.lifecycle.training_changes import change_notes as change_notes
from modelops.lifecycle.training_changes import immutable_changes as immutable_changes
from modelops.lifecycle.training_pods import PodView as PodView
from modelops.lifecycle.training_pods import Role as Role
from modelops.lifecycle.training_pods import pick_failure
from modelops.lifecycle.training_report import (
    INPUT_ERROR_EXIT_CODE,
    parse_progress,
    parse_result,
)
from modelops.lifecycle.training_rules import (
    checkpoint_uri,
    current_attempt,
    failed_attempts,
    fill_attempts,
    gang_size,
    headline_metric,
    ttl_deadline,
    version_uri,
)
from modelops.lifecycle.training_rules import retry_delay as retry_delay
from modelops.lifecycle.training_search import search_from_text

# Condition types and their reasons: fixed strings that clients may match on.
WORKERS_READY = "WorkersReady"
READY = "Ready"
FAILED = "Failed"

REASON_ALL_WORKERS_READY = "AllWorkersReady"
REASON_WAITING_FOR_WORKERS = "WaitingForWorkers"
REASON_FINISHED = "Finished"
REASON_MODEL_VERSION_READY = "ModelVersionReady"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
REASON_INPUT_ERROR = "InputError"
REASON_INVALID_SPEC = "InvalidSpec"

TERMINAL = frozenset({TrainingPhase.SUCCEEDED, TrainingPhase.FAILED})


@dataclass(frozen=True)
class Observed:
    """Everything one decision looks at."""

    spec: TrainingJobSpec
    status: TrainingJobStatus
    generation: int | None
    pods: tuple[PodView, ...]
    version: int
    job_id: str
    now: datetime
    retry_backoff_seconds: float = 10.0
    retry_backoff_limit_seconds: float = 360.0


@dataclass(frozen=True)
class Plan:
    """What the adapter should make true, in order: status first, then the pods."""

    status: TrainingJobStatus
    attempt: int
    create_cluster: bool = False  # create the attempt's missing pods
    delete_pods: tuple[str, ...] = ()
    delete_all: bool = False  # the TTL has passed: remove every child but the artifacts
    events: tuple[EventNote, ...] = ()
    requeue_after: float | None = None


# --------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------


@dataclass
class _Draft:
    """The status being built, and what was decided on the way."""

    obs: Observed
    status: TrainingJobStatus
    events: list[EventNote] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    def condition(self, type_: str, value: bool, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions,
            type_,
            value,
            reason,
            message,
            self.obs.now,
            self.obs.generation,
        )

    def say(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventNote(type_, reason, message))


def plan(obs: Observed) -> Plan:
    """The next status of a TrainingJob and what to do to its pods."""
    draft = _Draft(obs, obs.status.model_copy(deep=True))
    draft.status.observed_generation = obs.generation
    before = obs.status.phase
    result = _plan_finished(draft) if before in TERMINAL else _plan_active(draft)
    if draft.status.phase != before:
        _announce_phase(draft)
    return Plan(
        status=draft.status,
        attempt=result.attempt,
        create_cluster=result.create_cluster,
        delete_pods=tuple(dict.fromkeys(draft.delete)),
        delete_all=result.delete_all,
        events=tuple(draft.events),
        requeue_after=result.requeue_after,
    )


@dataclass(frozen=True)
class _Step:
    attempt: int
    create_cluster: bool = False
    delete_all: bool = False
    requeue_after: float | None = None


def _plan_active(draft: _Draft) -> _Step:
    obs, status = draft.obs, draft.status
    index = current_attempt(status, obs.pods)
    fill_attempts(status, index, obs.now)
    if status.start_time is None:
        status.start_time = obs.now
    attempt = status.attempts[index]
    draft.delete += [p.name for p in obs.pods if p.attempt < index and not p.deleting]
    pods = [p for p in obs.pods if p.attempt == index and not p.deleting]
    head = next((p for p in pods if p.role == Role.HEAD), None)
    _read_progress(draft, head, attempt)

    if attempt.result == "Failed":
        return _plan_retry(draft, index, pods)
    if head is not None and head.phase == "Succeeded":
        return _plan_succeeded(draft, index, head, pods)
    failed = [p for p in pods if p.failed]
    if failed:
        reason = pick_failure(failed)
        attempt.result = "Failed"
        attempt.finished_at = obs.now
        attempt.reason = reason
        draft.say("Warning", "AttemptFailed", f"attempt {index}: {reason}")
        # The training said the input is unusable (no shards, missing columns): the same
        # input fails the same way on every attempt, so none is made.
        permanent = any(
            p.role == Role.HEAD and p.exit_code == INPUT_ERROR_EXIT_CODE for p in failed
        )
        return _plan_retry(draft, index, pods, permanent)
    return _plan_running(draft, index, head, pods)


def _read_progress(draft: _Draft, head: PodView | None, attempt: Attempt) -> None:
    report = parse_progress(head.progress if head else None)
    if report is None:
        return
    obs = draft.obs
    progress = report.progress.model_copy(update={"updated_at": obs.now})
    if progress.total_epochs == 0:
        progress.total_epochs = obs.spec.training.epochs
    if progress.percent == 0 and progress.total_epochs:
        progress.percent = min(100, 100 * progress.epoch // progress.total_epochs)
    draft.status.progress = progress
    if obs.spec.search is not None:
        found = search_from_text(head.progress if head else None, obs.spec.search)
        draft.status.search = found or draft.status.search
    if report.checkpoint:
        attempt.last_checkpoint = report.checkpoint
    elif progress.epoch > 0:
        attempt.last_checkpoint = checkpoint_uri(obs.spec, obs.job_id, progress.epoch)


def _worker_counts(draft: _Draft, pods: list[PodView]) -> int:
    desired = draft.obs.spec.resources.workers
    ready = sum(
        1
        for p in pods
        if p.role == Role.WORKER and p.index < desired and p.ready and p.phase == "Running"
    )
    draft.status.workers = WorkerCounts(ready=ready, desired=desired)
    if ready >= desired:
        draft.condition(
            WORKERS_READY, True, REASON_ALL_WORKERS_READY, f"{ready}/{desired} workers ready"
        )
    else:
        draft.condition(
            WORKERS_READY, False, REASON_WAITING_FOR_WORKERS, f"{ready}/{desired} workers ready"
        )
    return ready


def _plan_running(draft: _Draft, index: int, head: PodView | None, pods: list[PodView]) -> _Step:
    obs, status = draft.obs, draft.status
    ready = _worker_counts(draft, pods)
    head_up = head is not None and head.phase == "Running" and head.ready
    if head_up and ready >= gang_size(obs.spec):
        status.phase = TrainingPhase.RUNNING
        epoch = status.progress.epoch
        status.message = f"attempt {index} training" + (f", epoch {epoch}" if epoch else "")
    else:
        status.phase = TrainingPhase.PROVISIONING
        status.message = (
            f"attempt {index}: head {'ready' if head_up else 'starting'}, "
            f"{ready}/{obs.spec.resources.workers} workers ready"
        )
    draft.condition(READY, False, status.phase.value, status.message)
    return _Step(attempt=index, create_cluster=True)


def _plan_succeeded(draft: _Draft, index: int, head: PodView, pods: list[PodView]) -> _Step:
    obs, status = draft.obs, draft.status
    spec = obs.spec
    attempt = status.attempts[index]
    result = parse_result(head.message)
    metrics = result.metrics if result else dict(status.progress.metrics)
    # The termination message is written inside the pod: it may move the number up (the
    # allocated one was published by another writer first, and the runtime only ever
    # takes a later free one), never down onto an existing version, and the location
    # always follows from the spec, never from the message.
    number = obs.version
    if result and result.version > obs.version:
        number = result.version
    status.model_version = ModelVersionRef(
        name=spec.output.model_name,
        version=number,
        uri=version_uri(spec, number),
        metrics=metrics,
        data_snapshot=result.data_snapshot if result else None,
        parent_version=(result.parent_version if result else None)
        or (spec.warm_start.version if spec.warm_start else None),
    )
    if result and result.trials:
        status.trials = list(result.trials)
    if result and result.checkpoint:
        attempt.last_checkpoint = result.checkpoint
    status.main_metric = headline_metric(spec, metrics)
    attempt.result = "Succeeded"
    attempt.finished_at = obs.now
    status.phase = TrainingPhase.SUCCEEDED
    status.completion_time = obs.now
    version = status.model_version
    status.message = f"model {version.name} version {version.version} at {version.uri}"
    if result and result.origin:
        status.message += f", {describe(result.origin.how, result.origin.why)}"
    draft.condition(READY, True, REASON_MODEL_VERSION_READY, status.message)
    _finish_workers(draft, pods)
    return _Step(attempt=index, requeue_after=_seconds_to_ttl(draft))


def _plan_retry(draft: _Draft, index: int, pods: list[PodView], permanent: bool = False) -> _Step:
    """The current attempt failed: start the next one after a back-off, or give up."""
    obs, status = draft.obs, draft.status
    failures = failed_attempts(status)
    last = status.attempts[index]
    if permanent or failures > obs.spec.backoff_limit:
        status.phase = TrainingPhase.FAILED
        status.completion_time = obs.now
        if permanent:
            reason = REASON_INPUT_ERROR
            status.message = f"the input cannot be trained on, not retried: {last.reason}"
        else:
            reason = REASON_BACKOFF_LIMIT
            status.message = (
                f"failed {failures} time(s), backoffLimit {obs.spec.backoff_limit}: {last.reason}"
            )
        draft.condition(FAILED, True, reason, status.message)
        draft.condition(READY, False, reason, status.message)
        _finish_workers(draft, pods)
        return _Step(attempt=index, requeue_after=_seconds_to_ttl(draft))
    # The failed attempt's pods go now: its workers may hold GPUs the retry needs.
    draft.delete += [p.name for p in pods]
    _worker_counts(draft, [])
    delay = retry_delay(failures, obs.retry_backoff_seconds, obs.retry_backoff_limit_seconds)
    finished = last.finished_at or obs.now
    wait = (finished + timedelta(seconds=delay) - obs.now).total_seconds()
    if wait > 0:
        status.phase = TrainingPhase.PENDING
        status.message = f"attempt {index} failed; retrying from the last checkpoint in {wait:.0f}s"
        draft.condition(READY, False, TrainingPhase.PENDING.value, status.message)
        return _Step(attempt=index, requeue_after=wait)
    nxt = index + 1
    status.attempts.append(
        Attempt(index=nxt, started_at=obs.now, last_checkpoint=last.last_checkpoint)
    )
    status.phase = TrainingPhase.PROVISIONING
    resume = last.last_checkpoint or "the start (no checkpoint yet)"
    status.message = f"attempt {nxt} resumes from {resume}"
    draft.condition(READY, False, TrainingPhase.PROVISIONING.value, status.message)
    draft.say("Normal", "Retrying", f"attempt {nxt} of {obs.spec.backoff_limit + 1}: {resume}")
    return _Step(attempt=nxt, create_cluster=True)


def _finish_workers(draft: _Draft, pods: list[PodView]) -> None:
    # Workers have nothing left to do once the head is done; they may hold GPUs, so they
    # go now. The head pod (its log and result) stays until the TTL.
    draft.delete += [p.name for p in pods if p.role == Role.WORKER]
    desired = draft.obs.spec.resources.workers
    draft.status.workers = WorkerCounts(ready=0, desired=desired)
    draft.condition(WORKERS_READY, False, REASON_FINISHED, "the job has finished")


def _seconds_to_ttl(draft: _Draft) -> float | None:
    deadline = ttl_deadline(draft.obs.spec, draft.status)
    if deadline is None:
        return None
    return max(0.0, (deadline - draft.obs.now).total_seconds())


def _plan_finished(draft: _Draft) -> _Step:
    """A finished job: keep workers away, and remove the rest once the TTL has passed."""
    obs = draft.obs
    index = current_attempt(draft.status, obs.pods)
    live = [p for p in obs.pods if not p.deleting]
    draft.delete += [p.name for p in live if p.role == Role.WORKER or p.attempt < index]
    deadline = ttl_deadline(obs.spec, draft.status)
    if deadline is None:
        return _Step(attempt=index)
    if obs.now < deadline:
        return _Step(attempt=index, requeue_after=(deadline - obs.now).total_seconds())
    if live:
        draft.say(
            "Normal",
            "CleanedUp",
            f"ttlSecondsAfterFinished ({obs.spec.ttl_seconds_after_finished}s) passed: "
            "pods removed, artifacts kept",
        )
        return _Step(attempt=index, delete_all=True)
    return _Step(attempt=index)


def _announce_phase(draft: _Draft) -> None:
    phase = draft.status.phase
    kind = "Warning" if phase == TrainingPhase.FAILED else "Normal"
    draft.say(kind, phase.value, draft.status.message or phase.value)


def invalid_spec_status(
    status: TrainingJobStatus, message: str, now: datetime, generation: int | None
) -> tuple[TrainingJobStatus, list[EventNote]]:
    """A spec the API server let through but the models reject: Failed, nothing started."""
    out = status.model_copy(deep=True)
    out.observed_generation = generation
    events: list[EventNote] = []
    if out.phase in TERMINAL:
        return out, events
    out.phase = TrainingPhase.FAILED
    out.message = message
    out.completion_time = now
    out.conditions = set_condition(
        out.conditions, FAILED, True, REASON_INVALID_SPEC, message, now, generation
    )
    events.append(EventNote("Warning", REASON_INVALID_SPEC, message))
    return out, events
