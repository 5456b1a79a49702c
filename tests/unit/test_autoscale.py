"""The autoscaling policy, by example and by property."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.api.deployment import AutoscalingSpec, ScalingRule
from modelops.lifecycle.autoscale import (
    Decision,
    History,
    Observed,
    Reason,
    desired_replicas,
)

INTERVAL = 5.0  # seconds between samples, the spec's default intervalSeconds


def run(
    config: AutoscalingSpec, loads: list[float], start: int, interval: float = INTERVAL
) -> list[Decision]:
    """Feed one load sample per interval, applying each decision like the loop does."""
    history = History.start(0.0, start)
    replicas, out = start, []
    for i, load in enumerate(loads, start=1):
        decision = desired_replicas(config, Observed(replicas, load), history, i * interval)
        history, replicas = decision.history, decision.replicas
        out.append(decision)
    return out


def changes(decisions: list[Decision]) -> int:
    return sum(d.changed for d in decisions)


# -- examples ------------------------------------------------------------------


def test_a_load_step_scales_up_within_the_rate_limit_then_to_the_full_count() -> None:
    config = AutoscalingSpec(max_replicas=20, target=50)
    decisions = run(config, [500.0] * 6, start=1)
    # No limit set: the HPA's default, the larger of +4 replicas and +100% per 15 s.
    assert [d.replicas for d in decisions] == [5, 5, 5, 10, 10, 10]
    assert decisions[0].reason == Reason.RATE_LIMITED
    assert decisions[3].reason == Reason.SCALED_UP


def test_limits_that_are_set_apply_together() -> None:
    rule = ScalingRule(stabilization_seconds=0, max_step_replicas=2, period_seconds=15)
    config = AutoscalingSpec(max_replicas=20, target=50, scale_up=rule)
    assert [d.replicas for d in run(config, [500.0] * 7, start=1)] == [3, 3, 3, 5, 5, 5, 7]
    both = rule.model_copy(update={"max_step_percent": 50})
    config = AutoscalingSpec(max_replicas=20, target=50, scale_up=both)
    # From 4: +2 replicas or +50% (6): the stricter, 6; from 6: +2 = 8 vs +50% = 9.
    assert [d.replicas for d in run(config, [500.0] * 4, start=4)][::3] == [6, 8]
    down = ScalingRule(stabilization_seconds=0, max_step_replicas=1, period_seconds=30)
    config = AutoscalingSpec(max_replicas=20, target=50, scale_down=down)
    assert [d.replicas for d in run(config, [0.0] * 7, start=4)] == [3, 3, 3, 3, 3, 3, 2]


def test_a_drop_waits_for_the_scale_down_window() -> None:
    config = AutoscalingSpec(max_replicas=20, target=50)
    decisions = run(config, [500.0] * 6 + [100.0] * 70, start=10)
    counts = [d.replicas for d in decisions]
    drop_at = 7  # first low sample, at t = 35 s
    first_down = next(i for i, d in enumerate(decisions, 1) if d.replicas < 10)
    # The 500-rps samples stay in the 300 s window until t = 335 s.
    assert first_down * INTERVAL >= 6 * INTERVAL + 300
    assert first_down >= drop_at
    assert counts[-1] == 2
    assert decisions[first_down - 1].reason == Reason.SCALED_DOWN


def test_within_tolerance_nothing_moves() -> None:
    config = AutoscalingSpec(target=50, max_replicas=10)
    decisions = run(config, [209.0, 191.0, 205.0], start=4)  # 4 replicas want 200
    assert changes(decisions) == 0
    assert decisions[0].reason == Reason.WITHIN_TOLERANCE


def test_min_and_max_bound_the_count() -> None:
    config = AutoscalingSpec(min_replicas=2, max_replicas=3, target=10)
    decisions = run(config, [1000.0] * 5, start=2)
    assert max(d.replicas for d in decisions) == 3
    assert decisions[-1].reason == Reason.AT_LIMIT
    low = AutoscalingSpec(
        min_replicas=2, max_replicas=3, target=10, scale_down=ScalingRule(stabilization_seconds=0)
    )
    assert run(low, [0.0] * 3, start=3)[-1].replicas == 2


def test_a_lowered_max_applies_at_once() -> None:
    config = AutoscalingSpec(max_replicas=4, target=10)
    decision = desired_replicas(config, Observed(9, 90.0), History.start(0.0, 9), 5.0)
    assert decision.replicas == 4


def test_scale_to_zero_when_idle_and_activation_by_the_first_queued_request() -> None:
    config = AutoscalingSpec(
        min_replicas=0,
        scale_to_zero=True,
        target=10,
        scale_down=ScalingRule(stabilization_seconds=60),
    )
    decisions = run(config, [5.0] * 2 + [0.0] * 20, start=1)
    zero_at = next(i for i, d in enumerate(decisions, 1) if d.replicas == 0)
    assert (zero_at - 2) * INTERVAL >= 60  # idle for the whole window first
    assert decisions[zero_at - 1].reason == Reason.SCALED_TO_ZERO
    history = decisions[-1].history
    idle = desired_replicas(config, Observed(0, 0.0), history, 200.0)
    assert (idle.replicas, idle.reason) == (0, Reason.IDLE)
    woken = desired_replicas(config, Observed(0, 0.0, queued=1), idle.history, 205.0)
    assert (woken.replicas, woken.reason) == (1, Reason.ACTIVATED)


def test_min_replicas_with_scale_to_zero_still_serves_load_with_at_least_one() -> None:
    config = AutoscalingSpec(min_replicas=0, scale_to_zero=True, target=100)
    decision = desired_replicas(config, Observed(2, 1.0), History.start(0.0, 2), 400.0)
    assert decision.replicas >= 1


def test_a_fresh_loop_does_not_scale_down_on_its_first_sample() -> None:
    config = AutoscalingSpec(target=10, max_replicas=10)
    first = desired_replicas(config, Observed(8, 10.0), History.start(100.0, 8), 105.0)
    assert first.replicas == 8
    assert first.reason == Reason.STABILIZING


# -- properties ----------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn) -> ScalingRule:
    return ScalingRule(
        stabilization_seconds=draw(st.integers(0, 600)),
        max_step_replicas=draw(st.none() | st.integers(1, 10)),
        max_step_percent=draw(st.none() | st.integers(1, 300)),
        period_seconds=draw(st.integers(1, 120)),
    )


@st.composite
def configs(draw: st.DrawFn, scale_to_zero: bool | None = None) -> AutoscalingSpec:
    to_zero = draw(st.booleans()) if scale_to_zero is None else scale_to_zero
    low = draw(st.integers(0 if to_zero else 1, 10))
    return AutoscalingSpec(
        min_replicas=low,
        max_replicas=draw(st.integers(max(low, 1), 50)),
        target=draw(st.floats(0.5, 500.0)),
        tolerance=draw(st.floats(0.0, 0.5)),
        scale_up=draw(rules()),
        scale_down=draw(rules()),
        scale_to_zero=to_zero,
    )


loads = st.floats(0.0, 20000.0, allow_nan=False)


@st.composite
def situations(draw: st.DrawFn) -> tuple[AutoscalingSpec, History, int, float]:
    """A config, and the history and count reached after some random past."""
    config = draw(configs())
    past = draw(st.lists(loads, max_size=30))
    start = draw(st.integers(config.min_replicas, config.max_replicas))
    decisions = run(config, past, start)
    history = decisions[-1].history if decisions else History.start(0.0, start)
    current = decisions[-1].replicas if decisions else start
    return config, history, current, (len(past) + 1) * INTERVAL


@settings(max_examples=300, deadline=None)
@given(situations(), loads, loads)
def test_monotone_in_load(
    situation: tuple[AutoscalingSpec, History, int, float], a: float, b: float
) -> None:
    config, history, current, now = situation
    low, high = sorted((a, b))
    at_low = desired_replicas(config, Observed(current, low), history, now)
    at_high = desired_replicas(config, Observed(current, high), history, now)
    assert at_low.replicas <= at_high.replicas


@settings(max_examples=300, deadline=None)
@given(situations(), loads, st.integers(0, 5))
def test_respects_min_and_max(
    situation: tuple[AutoscalingSpec, History, int, float], load: float, queued: int
) -> None:
    config, history, current, now = situation
    observed = Observed(current, load, queued)
    decision = desired_replicas(config, observed, history, now)
    assert decision.replicas <= config.max_replicas
    if observed.idle and config.scale_to_zero:
        assert decision.replicas >= 0
    else:
        assert decision.replicas >= max(config.min_replicas, 0 if observed.idle else 1)


@settings(max_examples=300, deadline=None)
@given(
    configs(scale_to_zero=False),
    st.lists(loads, min_size=1, max_size=80),
    st.floats(1.0, 30.0),
    st.data(),
)
def test_respects_the_rate_limits(
    config: AutoscalingSpec, samples: list[float], interval: float, data: st.DataObject
) -> None:
    start = data.draw(st.integers(config.min_replicas, config.max_replicas))
    decisions = run(config, samples, start, interval)
    moves = [(i * interval, d.current, d.replicas) for i, d in enumerate(decisions, 1) if d.changed]
    for t, before, after in moves:
        up = after > before
        rule = config.scale_up if up else config.scale_down
        recent = [
            (b2, a2)
            for t2, b2, a2 in moves
            if t - rule.period_seconds < t2 <= t and (a2 > b2) == up
        ]
        moved = sum(abs(a2 - b2) for b2, a2 in recent)
        begin = after - moved if up else after + moved
        if up:
            assert after <= up_limit(rule, begin)
        else:
            # The bounds may override the rate limit only to reach minReplicas.
            assert after >= down_limit(rule, begin) or after == config.min_replicas


def up_limit(rule: ScalingRule, begin: int) -> int:
    """Written out from the field descriptions, independently of the policy's code."""
    if rule.max_step_replicas is None and rule.max_step_percent is None:
        return max(begin + 4, 2 * begin)  # the HPA's default policies
    limits = []
    if rule.max_step_replicas is not None:
        limits.append(begin + rule.max_step_replicas)
    if rule.max_step_percent is not None:
        limits.append(max(begin + 1, math.ceil(begin * (100 + rule.max_step_percent) / 100)))
    return min(limits)


def down_limit(rule: ScalingRule, begin: int) -> int:
    limits = [0]
    if rule.max_step_replicas is not None:
        limits.append(begin - rule.max_step_replicas)
    if rule.max_step_percent is not None:
        limits.append(min(begin - 1, math.floor(begin * (100 - rule.max_step_percent) / 100)))
    return max(limits)


# The configuration the noise property holds for: the spec's defaults. Tolerance
# 0.2 (the load ratio of a deployment sized for the mean stays within it under
# +-20% noise); scale up with no window, by +4 or +100% per 15 s; scale down on
# the highest recommendation of the last 300 s. One sample per 5 s. With the
# HPA's tolerance of 0.1, a peak just above an integer boundary can add two
# replicas that a later quiet window removes again: two changes.
NOISE_CONFIG: dict[str, Any] = dict(min_replicas=1, max_replicas=100)


@settings(max_examples=200, deadline=None)
@given(
    mean=st.floats(1.0, 4000.0),
    target=st.floats(5.0, 200.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_at_most_one_change_over_ten_minutes_of_noisy_constant_load(
    mean: float, target: float, seed: int
) -> None:
    config = AutoscalingSpec(target=target, **NOISE_CONFIG)
    assert config.tolerance == 0.2
    assert (config.scale_up.stabilization_seconds, config.scale_down.stabilization_seconds) == (
        0,
        300,
    )
    rng = random.Random(seed)
    samples = [mean * rng.uniform(0.8, 1.2) for _ in range(int(600 / INTERVAL))]
    start = min(config.max_replicas, max(1, math.ceil(mean / target)))
    assert changes(run(config, samples, start)) <= 1


def test_without_the_defaults_noise_makes_it_flap() -> None:
    """The controls for the property above: the tolerance and the window hold it steady."""
    rng = random.Random(7)
    samples = [1000.0 * rng.uniform(0.8, 1.2) for _ in range(120)]
    no_window = AutoscalingSpec(
        target=10.0,
        tolerance=0.1,
        scale_down=ScalingRule(stabilization_seconds=0),
        **NOISE_CONFIG,
    )
    assert changes(run(no_window, samples, 100)) > 5
    # The HPA's tolerance alone: the counterexample hypothesis found for it.
    hpa_tolerance = AutoscalingSpec(target=117.0, tolerance=0.1, **NOISE_CONFIG)
    rng = random.Random(495905)
    noisy = [686.0 * rng.uniform(0.8, 1.2) for _ in range(120)]
    assert changes(run(hpa_tolerance, noisy, 6)) == 2
