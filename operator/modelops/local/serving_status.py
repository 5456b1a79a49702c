"""The status of a ModelDeployment in local mode, from one tick's plan, replicas and load."""

from __future__ import annotations

from modelops.api.deployment import (
    DeploymentPhase,
    LiveMetrics,
    ModelDeploymentStatus,
    Promotion,
    ShadowReport,
    TrafficSplit,
)
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.rollout import Action, Plan, RolloutState
from modelops.lifecycle.servermetrics import Gauges, Window
from modelops.local.context import now


def next_status(
    status: ModelDeploymentStatus,
    state: RolloutState,
    plan: Plan,
    *,
    win: Window | None,
    current: Gauges | None,
    shadow: ShadowReport | None,
    ready: int,
    replicas: int,
    desired: int,
) -> ModelDeploymentStatus:
    """`status` after a tick: `win` is the load since the last scrape, `current` the gauges
    of this one, `shadow` the comparison to report."""
    metrics = status.metrics
    if win is not None:
        accuracy = current.accuracy.get(str(state.stable)) if current else None
        metrics = LiveMetrics(
            rps=round(win.rps, 2),
            p95_ms=None if win.p95_ms is None else round(win.p95_ms, 2),
            error_rate=round(win.error_rate, 4),
            accuracy=accuracy,
            updated_at=now(),
        )
    promotions = list(status.promotions)
    if plan.action == Action.PROMOTE and state.stable is not None:
        promotions = [
            *promotions,
            Promotion(version=state.stable, time=now(), reason=plan.message),
        ][-50:]
    available = ready > 0 and ready >= min(desired, 1)
    progressing = state.candidate is not None or ready < desired
    degraded = plan.action == Action.ROLLBACK or (
        status.phase == DeploymentPhase.DEGRADED and state.candidate is None
    )
    phase = (
        DeploymentPhase.PENDING
        if state.stable is None
        else DeploymentPhase.DEGRADED
        if degraded
        else DeploymentPhase.PROGRESSING
        if progressing and not available
        else DeploymentPhase.AVAILABLE
    )
    conditions = status.conditions
    stamp = now()
    conditions = set_condition(
        conditions, "Available", available, "Replicas", f"{ready} ready", stamp, 1
    )
    conditions = set_condition(
        conditions, "Progressing", progressing, plan.action.value, plan.message, stamp, 1
    )
    if plan.action == Action.ROLLBACK:
        conditions = set_condition(
            conditions, "Degraded", True, "RolledBack", plan.message, stamp, 1
        )
    elif plan.action == Action.PROMOTE:
        conditions = set_condition(
            conditions, "Degraded", False, "Promoted", plan.message, stamp, 1
        )
    return status.model_copy(
        update={
            "phase": phase,
            "conditions": conditions,
            "replicas": replicas,
            "ready_replicas": ready,
            "desired_replicas": desired,
            "active_version": state.stable,
            "candidate_version": state.candidate,
            "rollout_step": state.step,
            "traffic": TrafficSplit(
                stable=100 - plan.weight, candidate=plan.weight, shadow=plan.shadow
            ),
            "metrics": metrics,
            "promotions": promotions,
            "shadow": shadow,
        }
    )
