"""The autoscaling stage of the serving loop: load → the policy → the scale subresource.

The load comes from the loop's metrics totals (see samples.py); the decision from
`modelops.lifecycle.autoscale`; the count is written through the ModelDeployment's
scale subresource, as `kubectl scale`, an HPA or KEDA would, and the Deployment
follows `spec.replicas` on the same pass. With `autoscaling.enabled: false` this
stage only reads `spec.replicas`, leaving the count to whoever writes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from modelops.api.deployment import (
    AutoscaleMetric,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ScaleDecision,
)
from modelops.k8s.modeldeployment import status as report
from modelops.k8s.modeldeployment.samples import Snapshot, Totals
from modelops.lifecycle.autoscale import History, Observed, desired_replicas
from modelops.lifecycle.events import EventNote

WriteScale = Callable[[int], Awaitable[None]]


def metric_load(
    metric: AutoscaleMetric, latest: Snapshot, previous: Snapshot, totals: Totals
) -> float:
    """The load in the metric's unit, summed over the servers."""
    seconds = latest.time - previous.time
    if metric == AutoscaleMetric.RPS:
        return latest.since(previous).requests / seconds if seconds > 0 else 0.0
    if metric == AutoscaleMetric.CPU:
        return (latest.cpu_seconds - previous.cpu_seconds) / seconds if seconds > 0 else 0.0
    if metric == AutoscaleMetric.CONCURRENCY:
        return totals.gauges.in_flight
    return totals.gauges.queue_depth


class Autoscaler:
    """One ModelDeployment's autoscaler: the policy's history and the last count written."""

    def __init__(self, write_scale: WriteScale) -> None:
        self._write = write_scale
        self.history: History | None = None
        self._scaled: tuple[int | None, int] | None = None

    def current(self, spec: ModelDeploymentSpec) -> int | None:
        """spec.replicas, unless it is the value our last write replaced (a lagging watch)."""
        if self._scaled is not None and spec.replicas == self._scaled[0]:
            return self._scaled[1]
        return spec.replicas

    async def write(self, before: int | None, replicas: int) -> None:
        await self._write(replicas)
        self._scaled = (before, replicas)

    async def step(
        self,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        totals: Totals,
        now: float,
        stamp: datetime,
    ) -> tuple[int, EventNote | None]:
        """The replica count for this pass, and an Event when it changed."""
        config = spec.autoscaling
        if not config.enabled:
            self.history = None
            status.autoscaler = None
            replicas = self.current(spec)
            status.desired_replicas = replicas if replicas is not None else 1
            return status.desired_replicas, None
        current = self.current(spec)
        if current is None:
            current = max(config.min_replicas, 1)
            await self.write(spec.replicas, current)
        if self.history is None:
            self.history = History.start(now, current)
        latest, previous = totals.latest(), totals.previous()
        if latest is None or previous is None or not totals.endpoints:
            status.desired_replicas = current
            return current, None  # no load reading yet: never act on missing data
        load = metric_load(config.metric, latest, previous, totals)
        queued = int(totals.gauges.queue_depth)
        decision = desired_replicas(config, Observed(current, load, queued), self.history, now)
        self.history = decision.history
        view = report.autoscaler_status(decision, config.metric.value, load)
        if report.autoscaler_changed(status.autoscaler, view) or decision.changed:
            status.autoscaler = view
        status.desired_replicas = decision.replicas
        if not decision.changed:
            return current, None
        await self.write(spec.replicas, decision.replicas)
        status.last_scale = ScaleDecision(
            time=stamp,
            from_replicas=current,
            to_replicas=decision.replicas,
            load=round(max(0.0, load), 3),
            reason=f"{decision.reason.value}: {decision.message}"[:1024],
        )
        message = f"{current} → {decision.replicas}: {decision.message}"
        return decision.replicas, EventNote("Normal", "Scaled", message)
