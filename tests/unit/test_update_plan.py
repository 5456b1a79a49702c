"""`plan_update`: the IncrementalUpdate run state machine, pure, from observation to plan.

Each transition the cluster tests exercise end to end (start, wait, evaluate, promote,
reject, schema change, restart mid-run, no repeat) is stepped here one plan at a time,
the plan's status fed back as the next observation's, as the adapters do.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.update import DataDelta, IncrementalUpdate, IncrementalUpdateStatus, UpdatePhase
from modelops.lifecycle.datascan import DataScan
from modelops.lifecycle.training_report import canonical_digest
from modelops.lifecycle.update import plan_blocked, plan_refused, plan_update
from modelops.lifecycle.updateplan import (
    Blocked,
    Comparison,
    Evaluation,
    Observed,
    RunChild,
    UpdatePlan,
)
from tests.unit.manifests import incremental_update

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SPEC = IncrementalUpdate.model_validate(incremental_update()).spec


def _scan(new: int = 1, digest: str = "sha256:aa", problem: str | None = None) -> DataScan:
    return DataScan(
        shards=3 + new,
        rows=100 * (3 + new),
        digest=digest,
        delta=DataDelta(new_shards=new, new_rows=100 * new),
        schema_problem=problem,
    )


def _observe(status: IncrementalUpdateStatus, **changes: object) -> Observed:
    base = Observed(
        name="digits",
        spec=SPEC,
        status=status,
        now=NOW,
        generation=1,
        model="digits",
        evaluation_name=f"digits-run-{status.runs}-eval",
        serving=1,
        last_check=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _plan(status: IncrementalUpdateStatus, **changes: object) -> UpdatePlan:
    """One pass as an adapter makes it: scan when the plan asks, then plan again."""
    observed = _observe(status, **changes)
    plan = plan_update(observed)
    if plan.scan_due:
        scan = changes.get("scan", _scan())
        plan = plan_update(replace(observed, scan=scan))  # type: ignore[arg-type]
    return plan


def _reasons(plan: UpdatePlan) -> list[str]:
    return [e.reason for e in plan.events]


def _condition(status: IncrementalUpdateStatus, type_: str) -> tuple[str, str]:
    found = next(c for c in status.conditions if c.type == type_)
    return found.status.value, found.reason


def _started() -> IncrementalUpdateStatus:
    plan = _plan(IncrementalUpdateStatus(observed_generation=1))
    assert plan.status.current_run is not None
    return plan.status


def _trained(version: int = 2) -> IncrementalUpdateStatus:
    child = RunChild(phase="Succeeded", version=version)
    plan = _plan(_started(), child=child)
    return plan.status


# -- start and wait ------------------------------------------------------------------------


def test_a_due_check_asks_for_the_data_first_and_starts_a_run_on_enough_new_data() -> None:
    first = plan_update(_observe(IncrementalUpdateStatus(observed_generation=1)))
    assert first.scan_due and first.status.current_run is None and not first.events
    plan = _plan(IncrementalUpdateStatus(observed_generation=1))
    run = plan.status.current_run
    assert run is not None and run.training_job == "digits-run-1"
    assert run.base_version == 1 and run.snapshot_digest == "sha256:aa"
    assert run.delta.new_shards == 1
    assert plan.status.runs == 1 and plan.status.phase == UpdatePhase.TRAINING
    assert plan.requeue_after == 0.0 and plan.create is None  # the record is stored first
    assert _reasons(plan) == ["UpdateStarted"]
    assert plan.status.last_snapshot is not None and plan.status.last_snapshot.digest == "sha256:aa"


def test_the_child_is_created_on_the_pass_after_the_run_is_recorded() -> None:
    plan = _plan(_started())
    assert plan.create == "TrainingJob" and plan.status.current_run is not None


def test_no_check_before_the_interval_unless_the_spec_changed() -> None:
    status = IncrementalUpdateStatus(observed_generation=1)
    recent = NOW - timedelta(seconds=10)
    plan = plan_update(_observe(status, last_check=recent))
    assert not plan.scan_due and plan.requeue_after == 20.0
    changed = plan_update(_observe(status, last_check=recent, generation=2))
    assert changed.scan_due and changed.status.observed_generation == 2


def test_too_little_data_or_no_baseline_starts_nothing() -> None:
    status = IncrementalUpdateStatus(observed_generation=1)
    small = _plan(status, scan=_scan(new=0))
    assert small.status.current_run is None and small.requeue_after == 30.0
    assert _condition(small.status, "Ready") == ("True", "Watching")
    baseline = _plan(status, serving=None)
    assert baseline.status.current_run is None
    assert _condition(baseline.status, "Ready") == ("False", "WaitingForBaseline")


def test_a_training_run_is_followed_until_it_ends() -> None:
    plan = _plan(_started(), child=RunChild(phase="Running", message="epoch 2/5"))
    assert plan.create is None and plan.status.current_run is not None
    assert _condition(plan.status, "Updating") == ("True", "Training")
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert ready.message == "digits-run-1: Running, epoch 2/5"


# -- evaluate, promote, reject -------------------------------------------------------------


def test_a_succeeded_child_names_its_candidate_then_the_evaluation_is_created() -> None:
    status = _trained(version=2)
    run = status.current_run
    assert run is not None and run.candidate_version == 2
    assert run.evaluation_job == "digits-run-1-eval" and status.phase == UpdatePhase.EVALUATING
    plan = _plan(status, child=RunChild(phase="Succeeded", version=2))
    assert plan.create == "Evaluation"
    waiting = _plan(status, child=None, evaluation=Evaluation())
    assert waiting.create is None and waiting.status.current_run is not None


def test_a_better_candidate_is_promoted() -> None:
    result = Comparison(candidate={"accuracy": 0.97}, current={"accuracy": 0.95})
    observed = _observe(_trained(), evaluation=Evaluation(result=result))
    asked = plan_update(observed)
    assert asked.scan_due and asked.scan_baseline == 2  # the data is compared with it now
    plan = plan_update(replace(observed, scan=_scan(new=0)))
    assert plan.promoted == 2 and plan.status.promoted_version == 2
    assert plan.status.promoted_versions == [2] and plan.status.current_run is None
    record = plan.status.history[-1]
    assert record.decision == "Promoted" and record.version == 2
    assert (record.candidate_metric, record.current_metric) == (0.97, 0.95)
    assert plan.prune and "Promoted" in _reasons(plan)
    assert _condition(plan.status, "LastRunPromoted") == ("True", "Promoted")


def test_a_worse_candidate_is_rejected_and_the_same_data_is_not_tried_again() -> None:
    result = Comparison(candidate={"accuracy": 0.80}, current={"accuracy": 0.95})
    plan = _plan(_trained(), evaluation=Evaluation(result=result))
    assert plan.promoted is None and plan.status.promoted_version is None
    assert plan.status.history[-1].decision == "Rejected"
    assert plan.status.current_run is None
    # The run finished in this pass: the data is looked at again at once, and not retried.
    assert plan.status.runs == 1
    again = _plan(plan.status, last_check=NOW)
    assert again.status.current_run is None and again.status.runs == 1
    ready = next(c for c in again.status.conditions if c.type == "Ready")
    assert "was Rejected; waiting for new data" in ready.message
    fresh = _plan(plan.status, scan=_scan(new=2, digest="sha256:bb"))
    assert fresh.status.current_run is not None and fresh.status.runs == 2


def test_failures_are_recorded_with_their_cause() -> None:
    failed = _plan(_started(), child=RunChild(phase="Failed", message="OOM"))
    assert failed.status.history[-1].decision == "Failed"
    assert _condition(failed.status, "Degraded") == ("True", "TrainingFailed")
    no_version = _plan(_started(), child=RunChild(phase="Succeeded"))
    assert "without a model version" in no_version.status.history[-1].reason
    evaluation = _plan(_trained(), evaluation=Evaluation(failure="BackoffLimitExceeded"))
    assert _condition(evaluation.status, "Degraded") == ("True", "EvaluationFailed")
    assert evaluation.status.history[-1].version == 2
    taken = _plan(_started(), child=RunChild(foreign=True))
    assert _condition(taken.status, "Degraded") == ("True", "NameTaken")
    leaving = _plan(_started(), child=RunChild(foreign=True, deleting=True))
    assert leaving.status.current_run is not None and leaving.requeue_after == 2.0


def test_a_refused_child_fails_the_run() -> None:
    observed = _observe(_started())
    plan = plan_update(observed)
    refused = plan_refused(observed, plan, "could not create TrainingJob digits-run-1: denied")
    assert refused.status.current_run is None
    assert _condition(refused.status, "Degraded") == ("True", "CreateFailed")


# -- schema change, restart, blocked ------------------------------------------------------


def test_a_new_shard_with_another_schema_fails_the_run_before_any_child() -> None:
    problem = "shard part-3.parquet: column 'label' is missing"
    plan = _plan(IncrementalUpdateStatus(observed_generation=1), scan=_scan(problem=problem))
    assert plan.create is None and plan.status.current_run is None
    record = plan.status.history[-1]
    assert record.decision == "Failed" and record.reason == problem
    assert _condition(plan.status, "Degraded") == ("True", "SchemaChanged")
    assert "UpdateStarted" not in _reasons(plan)


def test_a_restart_mid_run_carries_on_from_the_status() -> None:
    # A new process knows nothing but the stored status and what it observes.
    status = IncrementalUpdateStatus.model_validate(_trained().to_dict())
    plan = _plan(status, last_check=None, evaluation=None)
    assert plan.create == "Evaluation" and plan.status.runs == 1


def test_an_unreadable_spec_or_data_is_said_and_retried() -> None:
    blocked = plan_blocked(
        Blocked(IncrementalUpdateStatus(), NOW, 3, "TrainingJobNotFound", "no recipe", 30.0)
    )
    assert blocked.status.phase == UpdatePhase.FAILED and blocked.requeue_after == 30.0
    assert _reasons(blocked) == ["TrainingJobNotFound"]
    again = plan_blocked(Blocked(blocked.status, NOW, 3, "TrainingJobNotFound", "no recipe", 30.0))
    assert not again.events  # the same problem is not announced twice
    status = IncrementalUpdateStatus(observed_generation=1)
    unavailable = plan_update(_observe(status, scan_error="listing x: FileNotFoundError"))
    assert _condition(unavailable.status, "Ready") == ("False", "DataUnavailable")
    assert unavailable.requeue_after == 30.0


# -- properties ------------------------------------------------------------------------------

_children = st.one_of(
    st.none(),
    st.builds(
        RunChild,
        phase=st.sampled_from([None, "Pending", "Running", "Succeeded", "Failed"]),
        version=st.one_of(st.none(), st.integers(1, 9)),
    ),
)
_results = st.builds(
    Comparison,
    candidate=st.fixed_dictionaries({"accuracy": st.floats(0, 1)}),
    current=st.one_of(st.none(), st.fixed_dictionaries({"accuracy": st.floats(0, 1)})),
)
_evaluations = st.one_of(
    st.none(),
    st.builds(Evaluation),
    st.builds(Evaluation, result=_results),
    st.builds(Evaluation, failure=st.just("crashed")),
)
_scans = st.builds(
    _scan,
    new=st.integers(0, 3),
    digest=st.sampled_from(["sha256:aa", "sha256:bb"]),
    problem=st.sampled_from([None, "column 'x' is missing"]),
)
_steps = st.lists(st.tuples(_children, _evaluations, _scans, st.integers(0, 120)), max_size=12)


def _walk(
    steps: list[tuple[RunChild | None, Evaluation | None, DataScan, int]],
) -> list[UpdatePlan]:
    status, now, plans = IncrementalUpdateStatus(observed_generation=1), NOW, []
    for child, evaluation, scan, seconds in steps:
        now += timedelta(seconds=seconds)
        plan = _plan(
            status, child=child, evaluation=evaluation, scan=scan, now=now, last_check=None
        )
        plans.append(plan)
        status = plan.status
    return plans


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_a_run_is_never_started_twice_for_the_same_delta(steps: list) -> None:  # type: ignore[type-arg]
    plans = _walk(steps)
    starts = [p.status.current_run for p in plans if "UpdateStarted" in _reasons(p)]
    history = plans[-1].status.history if plans else []
    for plan in plans:
        # At most one run in flight, numbered by the counter.
        run = plan.status.current_run
        if run is not None:
            assert run.training_job == f"digits-run-{plan.status.runs}"
    # A run that did not promote is never followed by another on the same digest.
    for earlier, later in pairwise(history):
        if earlier.decision != "Promoted":
            assert later.snapshot_digest != earlier.snapshot_digest
    assert len({r.training_job for r in starts if r is not None}) == len(starts)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_a_rejected_version_is_never_promoted(steps: list) -> None:  # type: ignore[type-arg]
    plans = _walk(steps)
    for plan in plans:
        rejected = {r.version for r in plan.status.history if r.decision != "Promoted"}
        assert plan.promoted is None or plan.promoted not in rejected
        if plan.promoted is not None:
            promotions = [r for r in plan.status.history if r.decision == "Promoted"]
            assert promotions and promotions[-1].version == plan.promoted
        for record in plan.status.history:
            if record.decision == "Promoted":
                assert record.version in plan.status.promoted_versions


def test_a_digest_stored_in_the_older_bare_format_still_stops_a_repeat() -> None:
    result = Comparison(candidate={"accuracy": 0.80}, current={"accuracy": 0.95})
    rejected = _plan(_trained(), evaluation=Evaluation(result=result), scan=_scan(new=0))
    record = rejected.status.history[-1]
    older = rejected.status.model_copy(
        update={"history": [record.model_copy(update={"snapshot_digest": "aa"})]}
    )
    again = _plan(older, scan=_scan(new=1, digest="sha256:aa"))
    assert again.status.current_run is None
    assert canonical_digest("aa") == canonical_digest("sha256:aa") == "sha256:aa"
