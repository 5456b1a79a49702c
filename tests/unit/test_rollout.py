"""Version resolution, the gate, and the canary / shadow step machine."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.deployment import AnalysisSpec, ModelRef, RolloutSpec
from modelops.lifecycle.rollout import (
    Action,
    GateInput,
    Outcome,
    RolloutState,
    VersionMetrics,
    evaluate_gate,
    plan_rollout,
    resolve_version,
)


def canary(**changes: Any) -> RolloutSpec:
    base: dict[str, Any] = {
        "strategy": "canary",
        "steps": [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}],
        "analysis": {"maxErrorRate": 0.01, "maxP95Ms": 250, "minRequests": 100},
    }
    base.update(changes)
    return RolloutSpec.model_validate(base)


GOOD = GateInput(
    candidate=VersionMetrics(requests=200, errors=0, p95_ms=40.0),
    stable=VersionMetrics(requests=2000, errors=0, p95_ms=38.0),
)
BAD = GateInput(
    candidate=VersionMetrics(requests=200, errors=20, p95_ms=40.0),
    stable=VersionMetrics(requests=2000),
)
QUIET = GateInput(candidate=VersionMetrics(requests=3), stable=VersionMetrics(requests=30))


# -- version resolution --------------------------------------------------------


def test_a_pinned_version_is_served_as_it_is() -> None:
    ref = ModelRef(name="digits", version="3")
    assert resolve_version(ref, promoted=[7, 8]).version == 3
    assert resolve_version(ref, promoted=[], available=[1, 2]).version is None


def test_latest_is_the_newest_promoted_version_not_rolled_back() -> None:
    ref = ModelRef(name="digits")
    assert resolve_version(ref, promoted=[2, 5, 4]).version == 5
    assert resolve_version(ref, promoted=[2, 5, 4], rejected=[5]).version == 4
    assert resolve_version(ref, promoted=[2, 5], available=[1, 2]).version == 2
    none = resolve_version(ref, promoted=[])
    assert none.version is None and "no promoted version" in none.message


# -- the gate ------------------------------------------------------------------


def test_gate_passes_healthy_candidates_and_fails_errors_and_latency() -> None:
    analysis = canary().analysis
    assert evaluate_gate(analysis, GOOD.candidate, GOOD.stable).outcome == Outcome.PASS
    failed = evaluate_gate(analysis, BAD.candidate, BAD.stable)
    assert failed.outcome == Outcome.FAIL and "errorRate" in failed.reason
    slow = VersionMetrics(requests=200, p95_ms=900.0)
    assert evaluate_gate(analysis, slow, GOOD.stable).outcome == Outcome.FAIL


def test_gate_waits_for_min_requests_but_fails_early_on_an_error_burst() -> None:
    analysis = canary().analysis
    assert evaluate_gate(analysis, VersionMetrics(requests=10), GOOD.stable).outcome == (
        Outcome.PENDING
    )
    # 5 errors: even 100 requests would give 5% > 1%.
    burst = VersionMetrics(requests=10, errors=5)
    assert evaluate_gate(analysis, burst, GOOD.stable).outcome == Outcome.FAIL
    # 1 error in 10: 100 clean requests more would make it 1%, within the limit.
    one = VersionMetrics(requests=10, errors=1)
    assert evaluate_gate(analysis, one, GOOD.stable).outcome == Outcome.PENDING


def test_gate_uses_accuracy_from_feedback_when_present() -> None:
    analysis = AnalysisSpec(min_accuracy=0.9, max_accuracy_drop=0.02, min_requests=50)
    stable = VersionMetrics(requests=500, accuracy=0.95, feedback_rows=400)
    worse = VersionMetrics(requests=100, accuracy=0.91, feedback_rows=80)
    verdict = evaluate_gate(analysis, worse, stable)
    assert verdict.outcome == Outcome.FAIL and "accuracyDrop" in verdict.reason
    fine = VersionMetrics(requests=100, accuracy=0.94, feedback_rows=80)
    assert evaluate_gate(analysis, fine, stable).outcome == Outcome.PASS
    # Too little feedback to judge: accuracy is not checked (and does not block).
    thin = VersionMetrics(requests=100, accuracy=0.2, feedback_rows=3)
    assert evaluate_gate(analysis, thin, stable).outcome == Outcome.PASS


def test_shadow_gate_judges_agreement_on_compared_rows() -> None:
    analysis = AnalysisSpec(min_agreement=0.9, min_requests=100)
    stable = VersionMetrics(requests=1000)
    agreeing = VersionMetrics(compared=300, agreement=0.97)
    assert evaluate_gate(analysis, agreeing, stable, shadow=True).outcome == Outcome.PASS
    disagreeing = VersionMetrics(compared=300, agreement=0.6)
    assert evaluate_gate(analysis, disagreeing, stable, shadow=True).outcome == Outcome.FAIL
    early = VersionMetrics(compared=30, agreement=0.6)
    assert evaluate_gate(analysis, early, stable, shadow=True).outcome == Outcome.PENDING


# -- the step machine ----------------------------------------------------------


def test_first_version_is_promoted_directly() -> None:
    plan = plan_rollout(canary(), RolloutState(), 3, None, 0.0)
    assert plan.action == Action.PROMOTE and plan.state.stable == 3 and plan.weight == 0


def test_rolling_strategy_switches_at_once() -> None:
    plan = plan_rollout(RolloutSpec(), RolloutState(stable=3), 4, None, 0.0)
    assert plan.action == Action.PROMOTE
    assert plan.state == RolloutState(stable=4)


def test_passing_canary_walks_the_steps_and_promotes() -> None:
    spec = canary()
    state = RolloutState(stable=3)
    plan = plan_rollout(spec, state, 4, None, 0.0)
    assert (plan.action, plan.weight, plan.state.candidate) == (Action.START, 10, 4)
    plan = plan_rollout(spec, plan.state, 4, GOOD, 30.0)
    assert (plan.action, plan.weight) == (Action.WAIT, 10)
    plan = plan_rollout(spec, plan.state, 4, GOOD, 61.0)
    assert (plan.action, plan.weight, plan.state.step) == (Action.ADVANCE, 50, 1)
    plan = plan_rollout(spec, plan.state, 4, GOOD, 100.0)
    assert plan.action == Action.WAIT
    plan = plan_rollout(spec, plan.state, 4, GOOD, 122.0)
    assert plan.action == Action.PROMOTE and plan.promoted == 4
    assert plan.state == RolloutState(stable=4)
    assert plan.weight == 0


def test_failing_canary_rolls_back_and_is_not_retried() -> None:
    spec = canary()
    started = plan_rollout(spec, RolloutState(stable=3), 4, None, 0.0).state
    plan = plan_rollout(spec, started, 4, BAD, 10.0)  # fails before the pause ends
    assert plan.action == Action.ROLLBACK
    assert plan.state == RolloutState(stable=3, rejected=frozenset({4}))
    assert plan.weight == 0 and "errorRate" in plan.message
    again = plan_rollout(spec, plan.state, 4, None, 20.0)
    assert again.action == Action.STEADY and again.state.candidate is None
    newer = plan_rollout(spec, plan.state, 5, None, 30.0)
    assert newer.action == Action.START and newer.state.candidate == 5


def test_a_step_without_enough_traffic_waits_past_its_pause() -> None:
    spec = canary()
    started = plan_rollout(spec, RolloutState(stable=3), 4, None, 0.0).state
    plan = plan_rollout(spec, started, 4, QUIET, 500.0)
    assert plan.action == Action.WAIT and "3/100 requests" in plan.message


def test_a_zero_weight_step_passes_on_time() -> None:
    spec = canary(steps=[{"weight": 0, "pauseSeconds": 5}, {"weight": 20, "pauseSeconds": 5}])
    started = plan_rollout(spec, RolloutState(stable=1), 2, None, 0.0).state
    plan = plan_rollout(spec, started, 2, QUIET, 6.0)
    assert plan.action == Action.ADVANCE and plan.weight == 20


def test_without_auto_promote_it_waits_for_a_request() -> None:
    spec = canary(autoPromote=False, steps=[{"weight": 50, "pauseSeconds": 0}])
    started = plan_rollout(spec, RolloutState(stable=1), 2, None, 0.0).state
    held = plan_rollout(spec, started, 2, GOOD, 1.0)
    assert held.action == Action.AWAIT_PROMOTION and held.weight == 50
    done = plan_rollout(spec, held.state, 2, GOOD, 2.0, promote_requested=True)
    assert done.action == Action.PROMOTE and done.state.stable == 2


def test_shadow_mirrors_then_promotes_or_rolls_back() -> None:
    spec = RolloutSpec(
        strategy="shadow", shadow_seconds=60, analysis=AnalysisSpec(min_agreement=0.9)
    )
    started = plan_rollout(spec, RolloutState(stable=1), 2, None, 0.0)
    assert started.shadow and started.weight == 0
    agree = GateInput(VersionMetrics(compared=500, agreement=0.99), VersionMetrics(requests=500))
    assert plan_rollout(spec, started.state, 2, agree, 30.0).action == Action.WAIT
    assert plan_rollout(spec, started.state, 2, agree, 61.0).action == Action.PROMOTE
    differ = GateInput(VersionMetrics(compared=500, agreement=0.5), VersionMetrics(requests=500))
    rolled = plan_rollout(spec, started.state, 2, differ, 10.0)
    assert rolled.action == Action.ROLLBACK and not rolled.shadow


def test_a_new_target_during_a_canary_replaces_the_candidate() -> None:
    spec = canary()
    started = plan_rollout(spec, RolloutState(stable=1), 2, None, 0.0).state
    plan = plan_rollout(spec, started, 3, GOOD, 10.0)
    assert plan.action == Action.START and plan.state.candidate == 3 and plan.state.step == 0
    back = plan_rollout(spec, started, 1, GOOD, 10.0)
    assert back.action == Action.ABORT and back.state == RolloutState(stable=1)


@settings(max_examples=200, deadline=None)
@given(
    errors=st.integers(0, 500),
    extra=st.integers(0, 5000),
    p95=st.floats(1.0, 2000.0),
    times=st.lists(st.floats(0.0, 1000.0), min_size=1, max_size=20),
)
def test_the_machine_never_serves_a_weight_outside_the_steps(
    errors: int, extra: int, p95: float, times: list[float]
) -> None:
    spec = canary()
    weights = {0} | {s.weight for s in spec.steps}
    state = plan_rollout(spec, RolloutState(stable=1), 2, None, 0.0).state
    observed = GateInput(
        VersionMetrics(requests=errors + extra, errors=errors, p95_ms=p95), GOOD.stable
    )
    for now in sorted(times):
        plan = plan_rollout(spec, state, 2, observed, now)
        assert plan.weight in weights
        # Whatever happens, the stable version keeps serving until a promotion.
        assert plan.state.stable in (1, 2)
        if plan.state.stable == 2:
            assert plan.action == Action.PROMOTE or plan.state.candidate is None
        state = plan.state
