"""The ModelDeployment's status, computed on a copy from the loop's decisions. Pure.

The loop writes the result only when `status_changed` says a meaningful field moved;
the live metrics summary is replaced only when a number moved by more than noise
(`summary_changed`), so a steady deployment is not rewritten every few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modelops.api.deployment import (
    AutoscalerStatus,
    DeploymentPhase,
    GateReport,
    LiveMetrics,
    ModelDeploymentStatus,
    Promotion,
    Rollback,
    RolloutStrategy,
    ShadowReport,
    TrafficSplit,
)
from modelops.k8s.modeldeployment.samples import Reading, Snapshot
from modelops.lifecycle.autoscale import Decision
from modelops.lifecycle.conditions import get_condition, set_condition
from modelops.lifecycle.events import EventNote
from modelops.lifecycle.rollout import Action, Plan, RolloutState, Verdict

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
HISTORY_LIMIT = 50

# Changes smaller than these are noise, not news.
RELATIVE_CHANGE = 0.10
RPS_FLOOR = 0.5
P95_FLOOR_MS = 2.0
ERROR_RATE_STEP = 0.005
ACCURACY_STEP = 0.01


def rollout_state(status: ModelDeploymentStatus) -> RolloutState:
    started = status.step_started_at.timestamp() if status.step_started_at else None
    return RolloutState(
        stable=status.active_version,
        candidate=status.candidate_version,
        step=status.rollout_step,
        step_started=started,
        rejected=frozenset(r.version for r in status.rollbacks),
    )


def _at(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def gate_report(verdict: Verdict | None) -> GateReport | None:
    if verdict is None:
        return None
    values = {check.name: check.value for check in verdict.checks}
    return GateReport(
        outcome=verdict.outcome.value,
        reason=verdict.reason[:4096],
        requests=verdict.evidence,
        error_rate=_clip(values.get("errorRate")),
        p95_ms=values.get("p95Ms"),
        accuracy=_clip(values.get("accuracy")),
        agreement=_clip(values.get("agreement")),
    )


def _clip(value: float | None) -> float | None:
    return None if value is None else min(1.0, max(0.0, value))


def record_plan(
    status: ModelDeploymentStatus, plan: Plan, strategy: RolloutStrategy, now: datetime
) -> list[EventNote]:
    """Write the plan into `status` (a copy the caller owns); the Events it deserves."""
    before = rollout_state(status)
    after = plan.state
    status.active_version = after.stable
    status.candidate_version = after.candidate
    status.rollout_step = after.step
    status.step_started_at = _at(after.step_started)
    status.traffic = TrafficSplit(
        stable=100 - plan.weight, candidate=plan.weight, shadow=plan.shadow
    )
    # The last candidate's gate stays visible after its promotion or rollback.
    if plan.verdict is not None:
        status.gate = gate_report(plan.verdict)
    elif plan.action == Action.START:
        status.gate = None
    notes: list[EventNote] = []
    if plan.action == Action.PROMOTE and after.stable is not None:
        status.promotions = [
            *status.promotions,
            Promotion(version=after.stable, time=now, reason=plan.message[:1024]),
        ][-HISTORY_LIMIT:]
        notes.append(EventNote("Normal", "Promoted", plan.message))
    elif plan.action == Action.ROLLBACK and before.candidate is not None:
        status.rollbacks = [
            *status.rollbacks,
            Rollback(version=before.candidate, time=now, reason=plan.message[:4096]),
        ][-HISTORY_LIMIT:]
        notes.append(EventNote("Warning", "RolledBack", plan.message))
    elif plan.action == Action.START:
        notes.append(EventNote("Normal", "RolloutStarted", plan.message))
    elif plan.action == Action.ADVANCE:
        notes.append(EventNote("Normal", "CanaryStep", plan.message))
    elif plan.action == Action.ABORT:
        notes.append(EventNote("Normal", "RolloutAborted", plan.message))
    if strategy == RolloutStrategy.SHADOW and (after.candidate or before.candidate):
        version = after.candidate or before.candidate
        status.shadow = shadow_report(status.shadow, version, plan)
    return notes


def shadow_report(old: ShadowReport | None, version: int | None, plan: Plan) -> ShadowReport:
    verdict = plan.verdict
    report = old if old is not None and old.version == version else ShadowReport(version=version)
    if verdict is None:
        return report
    values = {check.name: check.value for check in verdict.checks}
    return report.model_copy(
        update={
            "requests": verdict.evidence,
            "agreement": _clip(values.get("agreement", report.agreement)),
            "verdict": f"{verdict.outcome.value}: {verdict.reason}"[:4096],
        }
    )


def with_accuracies(
    report: ShadowReport | None, gauges: Reading, stable: str, candidate: str | None
) -> ShadowReport | None:
    if report is None or candidate is None:
        return report
    return report.model_copy(
        update={
            "stable_accuracy": _clip(gauges.accuracy.get(stable)),
            "candidate_accuracy": _clip(gauges.accuracy.get(candidate)),
        }
    )


def live_summary(
    latest: Snapshot, earlier: Snapshot, gauges: Reading, stable: str | None
) -> LiveMetrics:
    """Requests per second, p95, error rate over (earlier, latest]; accuracy of the stable."""
    seconds = latest.time - earlier.time
    window = latest.since(earlier)
    p95 = window.quantile(0.95)
    return LiveMetrics(
        rps=round(window.requests / seconds, 3) if seconds > 0 else 0.0,
        p95_ms=round(p95 * 1000.0, 3) if p95 is not None else None,
        error_rate=round(min(1.0, window.error_rate), 5),
        accuracy=_clip(gauges.accuracy.get(stable)) if stable else None,
        updated_at=datetime.fromtimestamp(latest.time, UTC),
    )


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch turning `before` into `after` (nested keys removed as null)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = merge_patch(old, value)
            if nested:
                out[key] = nested
        elif key not in before or old != value:
            out[key] = value
    out.update({key: None for key in before if key not in after})
    return out


def _moved(old: float | None, new: float | None, floor: float) -> bool:
    if (old is None) != (new is None):
        return True
    if old is None or new is None:
        return False
    return abs(new - old) > max(floor, RELATIVE_CHANGE * abs(old))


def summary_changed(old: LiveMetrics, new: LiveMetrics) -> bool:
    """True when a number moved by more than noise."""
    return (
        _moved(old.rps, new.rps, RPS_FLOOR)
        or _moved(old.p95_ms, new.p95_ms, P95_FLOOR_MS)
        or abs(new.error_rate - old.error_rate) > ERROR_RATE_STEP
        or _moved(old.accuracy, new.accuracy, ACCURACY_STEP)
    )


def autoscaler_status(decision: Decision, metric: str, load: float) -> AutoscalerStatus:
    return AutoscalerStatus(
        metric=metric,
        load=round(max(0.0, load), 3),
        recommendation=decision.recommendation,
        reason=decision.reason.value,
        message=decision.message[:1024],
    )


def autoscaler_changed(old: AutoscalerStatus | None, new: AutoscalerStatus) -> bool:
    if old is None:
        return True
    return (old.reason, old.recommendation, old.metric) != (
        new.reason,
        new.recommendation,
        new.metric,
    ) or _moved(old.load, new.load, RPS_FLOOR)


def set_conditions(
    status: ModelDeploymentStatus,
    *,
    now: datetime,
    generation: int | None,
    version_message: str,
    rolling: bool,
    degraded: tuple[str, str] | None,
) -> None:
    """Available, Progressing, Degraded and the phase, from what the status already says."""
    serving = status.active_version is not None or version_message.startswith("ensemble")
    ready = status.ready_replicas > 0
    conditions = status.conditions
    if not serving:
        conditions = set_condition(
            conditions, AVAILABLE, False, "NoVersion", version_message, now, generation
        )
    elif ready:
        message = f"{status.ready_replicas}/{status.desired_replicas} replicas ready"
        conditions = set_condition(
            conditions, AVAILABLE, True, "ReplicasReady", message, now, generation
        )
    elif status.desired_replicas == 0:
        conditions = set_condition(
            conditions, AVAILABLE, False, "ScaledToZero", "no replica runs", now, generation
        )
    else:
        conditions = set_condition(
            conditions, AVAILABLE, False, "NoReadyReplica", "no replica ready yet", now, generation
        )
    if status.candidate_version is not None:
        kind = "ShadowRunning" if status.traffic.shadow else "CanaryRunning"
        message = status.message or f"candidate {status.candidate_version}"
        conditions = set_condition(conditions, PROGRESSING, True, kind, message, now, generation)
    elif rolling:
        message = f"rolling update to version {status.active_version}"
        conditions = set_condition(
            conditions, PROGRESSING, True, "RollingUpdate", message, now, generation
        )
    else:
        message = f"serving version {status.active_version}" if serving else version_message
        conditions = set_condition(
            conditions, PROGRESSING, False, "Complete", message, now, generation
        )
    if degraded is not None:
        reason, message = degraded
        conditions = set_condition(conditions, DEGRADED, True, reason, message, now, generation)
    else:
        conditions = set_condition(conditions, DEGRADED, False, "Healthy", "", now, generation)
    status.conditions = conditions
    status.phase = _phase(status, serving, ready)


def _phase(status: ModelDeploymentStatus, serving: bool, ready: bool) -> DeploymentPhase:
    degraded = get_condition(status.conditions, DEGRADED)
    if degraded is not None and degraded.status == "True":
        return DeploymentPhase.DEGRADED
    progressing = get_condition(status.conditions, PROGRESSING)
    if progressing is not None and progressing.status == "True":
        return DeploymentPhase.PROGRESSING
    if serving and (ready or status.desired_replicas == 0):
        return DeploymentPhase.AVAILABLE
    return DeploymentPhase.PENDING


def observe_deployment(status: ModelDeploymentStatus, deployment: Mapping[str, Any] | None) -> None:
    """Replicas and ready replicas, as the inference Deployment reports them."""
    observed = (deployment or {}).get("status") or {}
    status.replicas = int(observed.get("replicas", 0))
    status.ready_replicas = int(observed.get("readyReplicas", 0))


def deployment_rolling(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the inference Deployment is still moving its pods to the current template."""
    deployment = deployment or {}
    observed = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 0))
    generation = int((deployment.get("metadata") or {}).get("generation", 0))
    behind = int(observed.get("observedGeneration", 0)) < generation
    return bool(deployment) and (behind or int(observed.get("updatedReplicas", 0)) < wanted)


def rolled_back(status: ModelDeploymentStatus) -> tuple[str, str] | None:
    """Degraded from a rollback until the next promotion."""
    if not status.rollbacks:
        return None
    last = status.rollbacks[-1]
    if status.promotions and status.promotions[-1].time >= last.time:
        return None
    return ("RolledBack", f"version {last.version} was rolled back: {last.reason}"[:1024])
