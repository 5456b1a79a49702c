"""The autoscaling policy: load in, replica count and its reason out. No clocks, no I/O.

It follows the Kubernetes HPA algorithm, so its knobs mean what they mean there:

1. raw recommendation: `ceil(load / target)`, unless the load per replica is within
   `tolerance` of the target (then the current count stands);
2. bounds: `[minReplicas, maxReplicas]`; the lower bound drops to 0 only when the
   deployment is idle (no load, nothing queued) and `scaleToZero` is set;
3. stabilization: scaling up acts on the *lowest* recommendation of the last
   `scaleUp.stabilizationSeconds`, scaling down on the *highest* of the last
   `scaleDown.stabilizationSeconds`, so a short spike or dip moves nothing;
4. rate limits: per `periodSeconds`, at most `maxStepReplicas` and at most
   `maxStepPercent`, whichever of them is set (both: the stricter); with
   neither, the HPA's defaults (up: the larger of 4 replicas and 100%; down:
   unlimited). Steps count from the replicas at the start of the period, so
   several small steps cannot add up to more than one big one.

Activation from zero skips steps 3 and 4 (as Ray Serve's policy does): with no
replica running, a queued request would otherwise wait a whole window.

The caller keeps the `History` that each `Decision` returns and passes it back;
`History.start` seeds it with the current count, so a freshly started loop does
not scale down on its first sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from modelops.api.deployment import AutoscaleMetric, AutoscalingSpec, ScalingRule

# Float noise in load/target must not turn 3.0000000001 replicas into 4.
_EPSILON = 1e-9

UNITS = {
    AutoscaleMetric.RPS: "rps",
    AutoscaleMetric.CONCURRENCY: "in flight",
    AutoscaleMetric.QUEUE_DEPTH: "queued",
    AutoscaleMetric.CPU: "cores",
}


class Reason(StrEnum):
    """Why the count is what it is: a fixed vocabulary for status and events."""

    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    WITHIN_TOLERANCE = "WithinTolerance"
    STABILIZING = "Stabilizing"
    RATE_LIMITED = "RateLimited"
    AT_LIMIT = "AtLimit"
    ACTIVATED = "Activated"
    SCALED_TO_ZERO = "ScaledToZero"
    IDLE = "Idle"
    STEADY = "Steady"


@dataclass(frozen=True)
class Observed:
    """What the loop measured.

    `load` is the total over the deployment's replicas in the metric's unit (rps,
    in-flight requests, queued requests or CPU cores); `queued` counts requests
    waiting for a replica, the activation signal when there are none.
    """

    replicas: int
    load: float
    queued: int = 0

    @property
    def idle(self) -> bool:
        return self.load <= 0.0 and self.queued <= 0


@dataclass(frozen=True)
class Change:
    time: float
    before: int
    after: int


@dataclass(frozen=True)
class History:
    """Recent recommendations and changes: all the state the policy needs."""

    recommendations: tuple[tuple[float, int], ...] = ()
    changes: tuple[Change, ...] = ()

    @classmethod
    def start(cls, now: float, replicas: int) -> History:
        """A history as if the current count had just been recommended."""
        return cls(recommendations=((now, replicas),))

    def recommend(self, now: float, replicas: int) -> History:
        return History((*self.recommendations, (now, replicas)), self.changes)

    def changed(self, change: Change | None) -> History:
        if change is None:
            return self
        return History(self.recommendations, (*self.changes, change))

    def pruned(self, now: float, keep_seconds: float) -> History:
        horizon = now - keep_seconds
        return History(
            recommendations=tuple(r for r in self.recommendations if r[0] >= horizon),
            changes=tuple(c for c in self.changes if c.time >= horizon),
        )


@dataclass(frozen=True)
class Decision:
    """The count to write, and why."""

    replicas: int
    current: int
    recommendation: int
    reason: Reason
    message: str
    history: History = field(repr=False)

    @property
    def changed(self) -> bool:
        return self.replicas != self.current


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _EPSILON))


def _lower_bound(config: AutoscalingSpec, observed: Observed) -> int:
    if observed.idle and config.scale_to_zero:
        return 0
    # minReplicas 0 means "may be idle at zero", never "serve load with none".
    return max(config.min_replicas, 0 if observed.idle else 1)


def raw_recommendation(config: AutoscalingSpec, observed: Observed) -> tuple[int, bool]:
    """(replicas the load calls for, whether the load is within tolerance), unbounded."""
    current = observed.replicas
    if current > 0:
        ratio = observed.load / (current * config.target)
        if abs(ratio - 1.0) <= config.tolerance:
            return current, True
    return _ceil(observed.load / config.target), False


def _window(history: History, now: float, seconds: float) -> list[int]:
    return [r for t, r in history.recommendations if t >= now - seconds]


def _period_start(history: History, now: float, rule: ScalingRule, current: int, up: bool) -> int:
    """Replicas at the start of the rule's period: current minus this period's own steps."""
    moved = 0
    for change in history.changes:
        if change.time > now - rule.period_seconds:
            delta = change.after - change.before
            if up and delta > 0:
                moved += delta
            elif not up and delta < 0:
                moved -= delta
    return current - moved if up else current + moved


# The HPA's default scale-up policies, used when a rule sets neither limit.
DEFAULT_UP_REPLICAS = 4
DEFAULT_UP_PERCENT = 100


def _up_limit(rule: ScalingRule, start: int) -> int:
    by_count, by_percent = rule.max_step_replicas, rule.max_step_percent
    if by_count is None and by_percent is None:
        return max(start + DEFAULT_UP_REPLICAS, _ceil(start * (1 + DEFAULT_UP_PERCENT / 100)))
    limits = []
    if by_count is not None:
        limits.append(start + by_count)
    if by_percent is not None:
        # At least one replica, or a percent limit could never leave 1 (or 0).
        limits.append(max(start + 1, _ceil(start * (1 + by_percent / 100))))
    return min(limits)


def _down_limit(rule: ScalingRule, start: int) -> int:
    by_count, by_percent = rule.max_step_replicas, rule.max_step_percent
    limits = [0]
    if by_count is not None:
        limits.append(start - by_count)
    if by_percent is not None:
        limits.append(min(start - 1, math.floor(start * (1 - by_percent / 100) + _EPSILON)))
    return max(limits)


def keep_seconds(config: AutoscalingSpec) -> float:
    """How much history the policy reads back."""
    return float(
        max(
            config.scale_up.stabilization_seconds,
            config.scale_down.stabilization_seconds,
            config.scale_up.period_seconds,
            config.scale_down.period_seconds,
        )
    )


def _describe(config: AutoscalingSpec, observed: Observed) -> str:
    unit = UNITS[config.metric]
    per = observed.load / observed.replicas if observed.replicas else observed.load
    return (
        f"load {observed.load:.3g} {unit} on {observed.replicas} replicas "
        f"({per:.3g}/replica, target {config.target:g})"
    )


def _activate(
    config: AutoscalingSpec, observed: Observed, history: History, now: float
) -> Decision:
    lower = _lower_bound(config, observed)
    wanted = max(lower, _ceil(observed.load / config.target))
    replicas = min(config.max_replicas, wanted)
    change = Change(now, 0, replicas) if replicas else None
    history = history.recommend(now, replicas).changed(change).pruned(now, keep_seconds(config))
    if replicas == 0:
        return Decision(0, 0, 0, Reason.IDLE, "idle at zero replicas", history)
    if observed.idle:  # minReplicas rose above zero while scaled down
        message = f"0 replicas is below minReplicas {config.min_replicas}"
        return Decision(replicas, 0, wanted, Reason.AT_LIMIT, message, history)
    message = f"activated from zero: {observed.queued} queued, {_describe(config, observed)}"
    return Decision(replicas, 0, wanted, Reason.ACTIVATED, message, history)


def desired_replicas(
    config: AutoscalingSpec, observed: Observed, history: History, now: float
) -> Decision:
    """The replica count to run now, given the load and what was decided before.

    `now` is in seconds on any clock, as long as the caller always uses the same one.
    """
    current = observed.replicas
    if current == 0:
        return _activate(config, observed, history, now)

    raw, within = raw_recommendation(config, observed)
    lower, upper = _lower_bound(config, observed), config.max_replicas
    recommendation = min(upper, max(lower, raw))
    history = history.recommend(now, recommendation)

    # Stabilization: the safest recommendation over each window (HPA semantics).
    up_floor = min(_window(history, now, config.scale_up.stabilization_seconds))
    down_ceiling = max(_window(history, now, config.scale_down.stabilization_seconds))
    stabilized = min(max(current, up_floor), down_ceiling)

    # Rate limits, counted from the replicas at the start of each period.
    up_to = _up_limit(config.scale_up, _period_start(history, now, config.scale_up, current, True))
    down_to = _down_limit(
        config.scale_down, _period_start(history, now, config.scale_down, current, False)
    )
    limited = min(max(stabilized, down_to), up_to)
    # The spec's bounds win over the rate limits (a lowered maxReplicas applies at once).
    replicas = min(upper, max(lower, limited))

    change = Change(now, current, replicas) if replicas != current else None
    history = history.changed(change).pruned(now, keep_seconds(config))

    reason, message = _explain(
        config, observed, raw, within, recommendation, stabilized, limited, replicas
    )
    return Decision(replicas, current, recommendation, reason, message, history)


def _explain(
    config: AutoscalingSpec,
    observed: Observed,
    raw: int,
    within: bool,
    recommendation: int,
    stabilized: int,
    limited: int,
    replicas: int,
) -> tuple[Reason, str]:
    current = observed.replicas
    load = _describe(config, observed)
    capped = "" if raw == recommendation else f" (capped from {raw} by min/maxReplicas)"
    if replicas == 0 and current > 0:
        return Reason.SCALED_TO_ZERO, f"idle for {config.scale_down.stabilization_seconds}s"
    if limited != replicas:
        return Reason.AT_LIMIT, f"{load}: min/maxReplicas set {replicas}"
    if stabilized != limited:
        return Reason.RATE_LIMITED, (
            f"{load} wants {stabilized}; the rate limit allows {replicas} this period"
        )
    if replicas > current:
        return Reason.SCALED_UP, f"{load} wants {recommendation}{capped}"
    if replicas < current:
        window = config.scale_down.stabilization_seconds
        return Reason.SCALED_DOWN, f"{load}: highest recommendation over {window}s is {replicas}"
    if recommendation == current and raw != recommendation:
        return Reason.AT_LIMIT, f"{load} wants {raw}; held at {current} by min/maxReplicas"
    if within:
        return Reason.WITHIN_TOLERANCE, f"{load} is within {config.tolerance:.0%} of target"
    if recommendation != current:
        up = recommendation > current
        window = (config.scale_up if up else config.scale_down).stabilization_seconds
        return Reason.STABILIZING, (
            f"{load} wants {recommendation}; holding {current} for the {window}s window"
        )
    return Reason.STEADY, f"{load} wants {current}"
