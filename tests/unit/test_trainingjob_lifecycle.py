"""The TrainingJob's decisions: phases, gang readiness, retries, TTL, spec changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.base import ConditionStatus
from modelops.api.training import TrainingJobSpec, TrainingJobStatus, TrainingPhase
from modelops.lifecycle.conditions import get_condition
from modelops.lifecycle.training import (
    FAILED,
    READY,
    WORKERS_READY,
    Observed,
    Plan,
    PodView,
    Role,
    change_notes,
    immutable_changes,
    invalid_spec_status,
    plan,
    retry_delay,
)
from modelops.lifecycle.training_report import TrainingResult
from tests.unit.manifests import training_job

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
JOB_ID = "uid-1"


def spec(**changes: Any) -> TrainingJobSpec:
    raw = training_job()["spec"]
    resources = changes.pop("resources", {})
    raw["resources"].update(resources)
    raw.update(changes)
    return TrainingJobSpec.model_validate(raw)


def head(attempt: int = 0, phase: str = "Running", ready: bool = True, **kw: Any) -> PodView:
    return PodView(f"job-{attempt}-head", Role.HEAD, attempt, 0, phase, ready, **kw)


def worker(
    i: int, attempt: int = 0, phase: str = "Running", ready: bool = True, **kw: Any
) -> PodView:
    return PodView(f"job-{attempt}-worker-{i}", Role.WORKER, attempt, i, phase, ready, **kw)


def observe(
    pods: list[PodView],
    status: TrainingJobStatus | None = None,
    job: TrainingJobSpec | None = None,
    now: datetime = T0,
) -> Observed:
    return Observed(
        spec=job or spec(),
        status=status or TrainingJobStatus(),
        generation=1,
        pods=tuple(pods),
        version=4,
        job_id=JOB_ID,
        now=now,
        retry_backoff_seconds=10.0,
    )


def cond(p: Plan, type_: str) -> tuple[ConditionStatus, str] | None:
    c = get_condition(p.status.conditions, type_)
    return (c.status, c.reason) if c else None


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


def running_cluster(attempt: int = 0) -> list[PodView]:
    return [head(attempt), worker(0, attempt), worker(1, attempt)]


# -- provisioning and running -------------------------------------------------------------


def test_a_new_job_starts_attempt_zero_and_provisions_its_cluster() -> None:
    p = plan(observe([]))
    assert p.status.phase == TrainingPhase.PROVISIONING
    assert p.create_cluster and p.attempt == 0
    assert [a.index for a in p.status.attempts] == [0]
    assert p.status.attempts[0].started_at == T0
    assert p.status.start_time == T0
    assert p.status.observed_generation == 1
    assert p.status.workers.desired == 2 and p.status.workers.ready == 0
    assert cond(p, WORKERS_READY) == (ConditionStatus.FALSE, "WaitingForWorkers")
    assert reasons(p) == ["Provisioning"]


def test_running_needs_the_head_and_every_worker_ready() -> None:
    partial = plan(observe([head(), worker(0), worker(1, phase="Pending", ready=False)]))
    assert partial.status.phase == TrainingPhase.PROVISIONING
    assert partial.status.workers.ready == 1
    assert cond(partial, WORKERS_READY) == (ConditionStatus.FALSE, "WaitingForWorkers")

    full = plan(observe(running_cluster(), status=partial.status))
    assert full.status.phase == TrainingPhase.RUNNING
    assert full.status.workers.ready == 2
    assert cond(full, WORKERS_READY) == (ConditionStatus.TRUE, "AllWorkersReady")
    assert reasons(full) == ["Running"]
    assert full.create_cluster  # missing pods would be recreated


def test_a_head_not_ready_keeps_the_job_provisioning() -> None:
    p = plan(observe([head(ready=False, phase="Pending"), worker(0), worker(1)]))
    assert p.status.phase == TrainingPhase.PROVISIONING
    assert cond(p, WORKERS_READY) == (ConditionStatus.TRUE, "AllWorkersReady")


def test_an_elastic_job_runs_at_min_workers_but_workers_ready_stays_false() -> None:
    job = spec(resources={"workers": 3, "minWorkers": 2, "maxWorkers": 3})
    pods = [head(), worker(0), worker(1), worker(2, phase="Pending", ready=False)]
    p = plan(observe(pods, job=job))
    assert p.status.phase == TrainingPhase.RUNNING
    assert cond(p, WORKERS_READY) == (ConditionStatus.FALSE, "WaitingForWorkers")


def test_progress_comes_from_the_head_annotation_with_the_checkpoint() -> None:
    doc = {
        "epoch": 3,
        "totalEpochs": 30,
        "percent": 10,
        "metrics": {"val_loss": 0.5},
        "samplesPerSecond": 1200.0,
        "attempt": 0,
        "jobId": JOB_ID,
        "phase": "training",
    }
    pods = [head(progress=json.dumps(doc)), worker(0), worker(1)]
    p = plan(observe(pods))
    assert p.status.progress.epoch == 3
    assert p.status.progress.percent == 10
    assert p.status.progress.metrics == {"val_loss": 0.5}
    assert p.status.progress.updated_at == T0
    assert p.status.attempts[0].last_checkpoint == (
        f"file:///var/lib/modelops/models/digits/checkpoints/{JOB_ID}/epoch-3"
    )
    assert "epoch 3" in (p.status.message or "")


def test_a_malformed_progress_annotation_is_ignored() -> None:
    p = plan(observe([head(progress="{not json"), worker(0), worker(1)]))
    assert p.status.progress.epoch == 0


# -- success ------------------------------------------------------------------------------


def test_success_records_the_version_from_the_termination_message() -> None:
    result = TrainingResult(
        version=4,
        uri="file:///var/lib/modelops/models/digits/v4",
        metrics={"val_accuracy": 0.97, "val_loss": 0.1},
        data_snapshot={"uri": "file:///s.json", "shards": 3, "rows": 1500, "digest": "sha256:ab"},
    )
    running = plan(observe(running_cluster()))
    pods = [head(phase="Succeeded", ready=False, message=result.encode()), worker(0), worker(1)]
    p = plan(observe(pods, status=running.status, now=T0 + timedelta(minutes=5)))
    assert p.status.phase == TrainingPhase.SUCCEEDED
    version = p.status.model_version
    assert version is not None
    assert (version.name, version.version, version.uri) == (
        "digits",
        4,
        "file:///var/lib/modelops/models/digits/v4",
    )
    assert version.metrics == {"val_accuracy": 0.97, "val_loss": 0.1}
    assert version.data_snapshot is not None and version.data_snapshot.rows == 1500
    assert p.status.main_metric == "val_loss=0.1"  # the early-stopping metric of the recipe
    assert p.status.completion_time == T0 + timedelta(minutes=5)
    assert p.status.attempts[0].result == "Succeeded"
    assert cond(p, READY) == (ConditionStatus.TRUE, "ModelVersionReady")
    assert set(p.delete_pods) == {"job-0-worker-0", "job-0-worker-1"}  # the head stays
    assert reasons(p) == ["Succeeded"]
    assert p.requeue_after == 600  # ttlSecondsAfterFinished of the example


def test_success_without_a_message_uses_the_allocated_version() -> None:
    p = plan(observe([head(phase="Succeeded", ready=False)]))
    assert p.status.model_version is not None
    assert p.status.model_version.version == 4
    assert p.status.model_version.uri == "file:///var/lib/modelops/models/digits/v4"


@pytest.mark.parametrize(
    ("claimed", "uri", "expected"),
    [
        (1, "file:///var/lib/modelops/models/digits/v1", 4),  # an older, existing version
        (4, "s3://other-tenant/models/fraud/v9", 4),  # another tenant's artifacts
        (6, "file:///elsewhere/v6", 6),  # the allocated number went to another writer
    ],
)
def test_the_termination_message_cannot_move_the_version_back_or_elsewhere(
    claimed: int, uri: str, expected: int
) -> None:
    """Finding 12: the pod's message never overrides the allocated number or the location."""
    result = TrainingResult(version=claimed, uri=uri, metrics={"val_loss": 0.1})
    pods = [head(phase="Succeeded", ready=False, message=result.encode())]
    version = plan(observe(pods)).status.model_version
    assert version is not None
    assert version.version == expected
    assert version.uri == f"file:///var/lib/modelops/models/digits/v{expected}"


# -- failure and retry --------------------------------------------------------------------


def test_a_failed_worker_fails_the_attempt_and_waits_for_the_backoff() -> None:
    running = plan(observe(running_cluster()))
    pods = [
        head(),
        worker(0),
        worker(1, phase="Failed", ready=False, reason="OOMKilled", exit_code=137),
    ]
    p = plan(observe(pods, status=running.status, now=T0 + timedelta(seconds=30)))
    attempt = p.status.attempts[0]
    assert attempt.result == "Failed"
    assert attempt.reason == "worker pod job-0-worker-1 failed: OOMKilled (exit code 137)"
    assert p.status.phase == TrainingPhase.PENDING
    assert set(p.delete_pods) == {"job-0-head", "job-0-worker-0", "job-0-worker-1"}
    assert not p.create_cluster
    assert p.requeue_after == 10.0
    assert reasons(p) == ["AttemptFailed", "Pending"]


def test_after_the_backoff_the_next_attempt_resumes_from_the_checkpoint() -> None:
    doc = json.dumps({"epoch": 5, "totalEpochs": 30, "metrics": {}})
    running = plan(observe([head(progress=doc), worker(0), worker(1)]))
    failed_at = T0 + timedelta(seconds=30)
    waiting = plan(
        observe([head(phase="Failed", ready=False, progress=doc)], running.status, now=failed_at)
    )
    later = failed_at + timedelta(seconds=11)
    p = plan(observe([], status=waiting.status, now=later))
    assert p.attempt == 1 and p.create_cluster
    assert [a.index for a in p.status.attempts] == [0, 1]
    checkpoint = f"file:///var/lib/modelops/models/digits/checkpoints/{JOB_ID}/epoch-5"
    assert p.status.attempts[1].last_checkpoint == checkpoint
    assert p.status.phase == TrainingPhase.PROVISIONING
    assert checkpoint in (p.status.message or "")
    assert reasons(p) == ["Retrying", "Provisioning"]


def test_past_the_backoff_limit_the_job_fails_with_the_reason() -> None:
    job = spec(backoffLimit=1)
    status = plan(observe([], job=job)).status
    now = T0
    for attempt in range(2):
        pods = [
            head(attempt, phase="Failed", ready=False, reason="Error", exit_code=1, message="boom")
        ]
        now += timedelta(minutes=5)
        p = plan(observe(pods, status=status, job=job, now=now))
        status = p.status
        if attempt == 0:
            now += timedelta(minutes=5)
            p = plan(observe([], status=status, job=job, now=now))
            status = p.status
            assert p.attempt == 1
    assert p.status.phase == TrainingPhase.FAILED
    assert cond(p, FAILED) == (ConditionStatus.TRUE, "BackoffLimitExceeded")
    assert "head pod job-1-head failed: Error (exit code 1): boom" in (p.status.message or "")
    assert p.status.completion_time == now
    assert reasons(p) == ["AttemptFailed", "Failed"]
    assert p.events[-1].type == "Warning"


def test_an_input_error_fails_the_job_without_retrying() -> None:
    """Finding 12: a missing column or an empty folder fails the same way every time."""
    job = spec(backoffLimit=5)
    message = "columns ['pixel_99'] are not in the data (it has ['pixel_0'])"
    pods = [
        head(phase="Failed", ready=False, reason="Error", exit_code=4, message=message),
        worker(0),
        worker(1),
    ]
    p = plan(observe(pods, job=job))
    assert p.status.phase == TrainingPhase.FAILED
    assert cond(p, FAILED) == (ConditionStatus.TRUE, "InputError")
    assert message in (p.status.message or "")
    assert [a.index for a in p.status.attempts] == [0]
    assert not p.create_cluster
    assert {"job-0-worker-0", "job-0-worker-1"} <= set(p.delete_pods)
    # Any other failure is still retried.
    pods[0] = head(phase="Failed", ready=False, reason="Error", exit_code=1, message="lost")
    assert plan(observe(pods, job=job)).status.phase != TrainingPhase.FAILED


def test_backoff_limit_zero_fails_on_the_first_failure() -> None:
    job = spec(backoffLimit=0)
    p = plan(observe([head(phase="Failed", ready=False)], job=job))
    assert p.status.phase == TrainingPhase.FAILED


def test_pods_of_older_attempts_are_deleted() -> None:
    status = TrainingJobStatus.model_validate(
        {"attempts": [{"index": 0, "result": "Failed"}, {"index": 1}], "phase": "Provisioning"}
    )
    p = plan(observe([head(0, phase="Failed"), worker(0, 0), *running_cluster(1)], status))
    assert set(p.delete_pods) == {"job-0-head", "job-0-worker-0"}
    assert p.attempt == 1 and p.status.phase == TrainingPhase.RUNNING


def test_a_lost_status_is_rebuilt_from_the_pods() -> None:
    p = plan(observe(running_cluster(2)))
    assert p.attempt == 2
    assert [a.result for a in p.status.attempts] == ["Failed", "Failed", "Running"]
    assert p.status.phase == TrainingPhase.RUNNING


@given(st.integers(min_value=1, max_value=40), st.floats(0.1, 100), st.floats(1, 1000))
def test_retry_delay_grows_and_is_capped(failures: int, base: float, limit: float) -> None:
    delay = retry_delay(failures, base, limit)
    assert 0 < delay <= limit
    assert delay >= min(limit, retry_delay(failures - 1, base, limit))


# -- finished jobs and TTL ----------------------------------------------------------------


def _succeeded() -> TrainingJobStatus:
    return plan(observe([head(phase="Succeeded", ready=False), worker(0), worker(1)])).status


def test_ttl_waits_then_removes_the_pods_once() -> None:
    status = _succeeded()
    before = plan(
        observe([head(phase="Succeeded", ready=False)], status, now=T0 + timedelta(seconds=100))
    )
    assert not before.delete_all and before.requeue_after == 500
    assert before.events == ()
    after = plan(
        observe([head(phase="Succeeded", ready=False)], status, now=T0 + timedelta(seconds=601))
    )
    assert after.delete_all
    assert reasons(after) == ["CleanedUp"]
    gone = plan(observe([], status, now=T0 + timedelta(seconds=700)))
    assert not gone.delete_all and gone.events == ()


def test_without_ttl_a_finished_job_keeps_its_head_but_not_its_workers() -> None:
    raw = training_job()["spec"]
    raw.pop("ttlSecondsAfterFinished")
    job = TrainingJobSpec.model_validate(raw)
    status = plan(observe([head(phase="Succeeded", ready=False)], job=job)).status
    p = plan(observe([head(phase="Succeeded", ready=False), worker(0)], status, job=job))
    assert p.delete_pods == ("job-0-worker-0",)
    assert not p.delete_all and p.requeue_after is None


# -- level-based: a decision applied and observed again changes nothing --------------------

_PHASES = st.sampled_from(["Pending", "Running", "Succeeded", "Failed"])


@st.composite
def _pods(draw: st.DrawFn) -> list[PodView]:
    attempt = draw(st.integers(0, 2))
    pods = [head(attempt, draw(_PHASES), draw(st.booleans()))] if draw(st.booleans()) else []
    for i in range(draw(st.integers(0, 3))):
        pods.append(worker(i, attempt, draw(_PHASES), draw(st.booleans())))
    return pods


@settings(max_examples=200, deadline=None)
@given(_pods(), st.integers(0, 600))
def test_plans_are_idempotent(pods: list[PodView], seconds: int) -> None:
    now = T0 + timedelta(seconds=seconds)
    first = plan(observe(pods, now=now))
    # The adapter applied the deletions; everything else is observed as it was.
    remaining = [p for p in pods if p.name not in first.delete_pods]
    second = plan(observe(remaining, status=first.status, now=now))
    assert second.status.to_dict() == first.status.to_dict()
    assert [e.reason for e in second.events if e.reason != "CleanedUp"] == []


# -- spec changes -------------------------------------------------------------------------


def test_immutable_fields_are_named() -> None:
    old = spec()
    new = spec(output={"modelName": "other", "storeUri": "file:///var/lib/modelops/models"})
    assert [path for path, _ in immutable_changes(old, new)] == ["spec.output"]
    raw = training_job()["spec"]
    raw["model"]["hiddenLayers"] = [32]
    raw["data"]["label"] = "y"
    changed = TrainingJobSpec.model_validate(raw)
    assert [path for path, _ in immutable_changes(old, changed)] == ["spec.model", "spec.data"]


def test_defaults_spelled_out_are_not_a_change() -> None:
    raw = training_job()["spec"]
    explicit = TrainingJobSpec.model_validate(raw)
    raw["model"]["batchNorm"] = False  # the default, now explicit
    assert immutable_changes(explicit, TrainingJobSpec.model_validate(raw)) == []


def test_mutable_changes_are_accepted_with_a_note() -> None:
    old = spec()
    new = spec(resources={"workers": 4}, backoffLimit=5)
    assert immutable_changes(old, new) == []
    assert change_notes(old, new) == [
        "spec.resources changed: the running attempt keeps its pods; the change applies to "
        "the next attempt"
    ]


def test_an_invalid_spec_fails_the_job_once() -> None:
    status, events = invalid_spec_status(TrainingJobStatus(), "spec.x: bad", T0, 2)
    assert status.phase == TrainingPhase.FAILED
    assert [e.reason for e in events] == ["InvalidSpec"]
    again, events = invalid_spec_status(status, "spec.x: bad", T0, 2)
    assert again == status and events == []
