"""The serving loop of one ModelDeployment: read, decide, act, report; then wait.

Every pass (each `autoscaling.intervalSeconds`, or sooner when the object changes):

1. resolve the version to serve (explicit, or the newest promoted one);
2. read the servers' metrics once (scrape or Prometheus) into monotonic totals;
3. rollout: plan the next step from the candidate's metrics since its step began;
4. autoscale: the policy's decision, written through the scale subresource;
5. apply the children (Services, PodDisruptionBudget, the admin token's Secret,
   Deployment) and push the traffic split to every server, with that token;
6. batch prediction, conditions, and a status write only when something moved.

Each stage catches its own errors, so a failing Prometheus or an unreachable
server costs one stage one pass, never the loop (Ray Serve's controller does the
same). The autoscaler's history and the step baselines live in memory: after an
operator restart the scale-down window and the current step's metrics window
start afresh, which errs on the side of not acting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelops.api.deployment import (
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RolloutStrategy,
)
from modelops.k8s.controller.status import StatusConflict
from modelops.k8s.modeldeployment import batch, builders, children, credentials, names
from modelops.k8s.modeldeployment import status as report
from modelops.k8s.modeldeployment.autoscaler import Autoscaler
from modelops.k8s.modeldeployment.batch import batch_report as batch_report
from modelops.k8s.modeldeployment.metrics_source import (
    Endpoint,
    EndpointsError,
    discover,
    query_prometheus,
    scrape,
)
from modelops.k8s.modeldeployment.routing import Split, apply_split
from modelops.k8s.modeldeployment.samples import Snapshot, Totals
from modelops.k8s.modeldeployment.shared import Shared as Shared
from modelops.k8s.modeldeployment.shared import Views as Views
from modelops.lifecycle.events import EventNote
from modelops.lifecycle.rollout import (
    Action,
    GateInput,
    Plan,
    Resolution,
    VersionMetrics,
    plan_rollout,
    resolve_version,
)

log = logging.getLogger(__name__)

SUMMARY_WINDOW = 60.0


@dataclass
class PassResult:
    """What one pass found, for the status and the next wait."""

    interval: float
    notes: list[EventNote] = field(default_factory=list)


def _local_versions(store_uri: str, model: str) -> set[int] | None:
    """Versions in a file:// store this process can see; None when it cannot look."""
    if not store_uri.startswith("file://"):
        return None
    root = os.path.join(store_uri[len("file://") :], model)
    if not os.path.isdir(root):
        return None
    return {
        int(entry[1:])
        for entry in os.listdir(root)
        if entry.startswith("v")
        and entry[1:].isdigit()
        and os.path.exists(os.path.join(root, entry, "model.json"))
    }


class ServingLoop:
    """One ModelDeployment's loop state and its passes."""

    def __init__(self, shared: Shared, namespace: str, name: str, uid: str, views: Views) -> None:
        self.shared = shared
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.views = views
        # Derived, not stored: the same (namespace, name, uid) gives the same token after a
        # restart, and the operator never needs to read the Secret it writes.
        self._admin_token = credentials.admin_token(shared.admin_key, namespace, name, uid)
        self.totals = Totals(keep_seconds=SUMMARY_WINDOW * 2)
        self.autoscaler = Autoscaler(self._write_scale)
        self.applier = children.Applier(shared.kube)
        self.baselines: dict[tuple[int, int], Snapshot] = {}
        self.clock: Callable[[], float] = time.time
        # The resourceVersion this pass's decisions rest on: the object as read, then as
        # our own scale write left it (a write of ours does not make the pass stale).
        self._version: str | None = None
        self._pass_body: Mapping[str, Any] = {}
        self._override_ignored = False  # warned once per loop

    # -- one pass -------------------------------------------------------------------------

    async def run_once(self, seen: Mapping[str, Any]) -> PassResult | None:
        """One pass from `seen` (the watched object), or from a fresh read when the watch
        has not caught up with our own last status write; None when the object is gone.

        The status is written conditionally on the resourceVersion it was computed from:
        `StatusConflict` when the object changed meanwhile (the loop computes again), so
        a stale read never overwrites what a newer pass recorded (rollbacks among it).
        """
        path = children.md_path(self.namespace, self.name)
        body = await self.shared.call(self.shared.status.read, path, dict(seen))
        if body is None:
            return None
        self._pass_body = body
        self._version = str(body["metadata"]["resourceVersion"])
        spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        # The tenancy rules as admission applies them: an object admitted without the
        # webhook never gets its pods.
        refused = self.shared.policy.serving_pod_problems(spec)
        root = self.shared.settings.store_root(spec.model.store_uri, self.namespace)
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"store_uri": root})})
        old = ModelDeploymentStatus.model_validate(body.get("status") or {})
        meta: Mapping[str, Any] = body.get("metadata") or {}
        status = old.model_copy(deep=True)
        now = self.clock()
        stamp = datetime.fromtimestamp(now, UTC)
        result = PassResult(interval=float(spec.autoscaling.interval_seconds))
        degraded: tuple[str, str] | None = None

        resolution = await self._resolve(spec, status)
        endpoints, snapshot = await self._read(spec, meta, now)
        plan = self._plan(spec, status, resolution, meta, snapshot, now)
        if plan is not None:
            result.notes += report.record_plan(status, plan, spec.rollout.strategy, stamp)
            status.message = plan.message
        replicas, scaled = await self.autoscaler.step(spec, status, self.totals, now, stamp)
        if scaled is not None:
            result.notes.append(scaled)
        if refused:
            degraded = ("PolicyRefused", "; ".join(str(p) for p in refused)[:1024])
        elif status.active_version is not None or spec.ensemble is not None:
            await self._apply_children(spec, status, replicas)
            # Routing and batch prediction fail on their own: the status is still written.
            try:
                routing_problem = await self._route(spec, status, plan, endpoints)
            except Exception as error:
                log.exception("%s/%s: routing", self.namespace, self.name)
                routing_problem = f"routing: {error}"[:1024]
            if routing_problem:
                degraded = ("RoutingFailed", routing_problem)
            try:
                ctx = self._context(spec, status, 0)
                await batch.reconcile(self.shared, ctx, self.views.jobs, status)
            except Exception:
                log.exception("%s/%s: batch prediction", self.namespace, self.name)
        report.observe_deployment(status, self.views.deployment())
        self._summarize(status, spec, snapshot)
        degraded = report.rolled_back(status) or degraded
        if spec.autoscaling.enabled and endpoints and not self.totals.endpoints:
            degraded = degraded or ("MetricsUnavailable", "no server answered on /metrics")
        message = resolution.message if spec.ensemble is None else "ensemble"
        report.set_conditions(
            status,
            now=stamp,
            generation=meta.get("generation"),
            version_message=message,
            rolling=report.deployment_rolling(self.views.deployment()),
            degraded=degraded,
        )
        status.observed_generation = meta.get("generation")
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": self._version}}
        await self.shared.call(
            self.shared.status.write, path, body, old.to_dict(), status.to_dict()
        )
        return result

    # -- stages ---------------------------------------------------------------------------

    async def _resolve(
        self, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
    ) -> Resolution:
        if spec.ensemble is not None:
            members = ",".join(str(m.version) for m in spec.ensemble.members)
            return Resolution(None, f"ensemble of versions {members}")
        promoted = {p.version for p in status.promotions} | self.views.trained(spec.model.name)
        rejected = {r.version for r in status.rollbacks}
        available = _local_versions(spec.model.store_uri, spec.model.name)
        return resolve_version(spec.model, promoted, rejected, available)

    async def _read(
        self, spec: ModelDeploymentSpec, meta: Mapping[str, Any], now: float
    ) -> tuple[list[Endpoint], Snapshot]:
        source = spec.autoscaling.metrics_source
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        override = annotations.get(names.ANNOTATION_METRICS_ENDPOINTS)
        if override is not None and not self.shared.endpoint_overrides:
            if not self._override_ignored:
                log.warning(
                    "%s/%s: ignoring %s: the operator reads only its own pods' addresses",
                    self.namespace,
                    self.name,
                    names.ANNOTATION_METRICS_ENDPOINTS,
                )
                self._override_ignored = True
            override = None
        try:
            endpoints = discover(self.views.pods(), source.pod_metrics_port, override)
        except EndpointsError as error:
            log.warning(
                "%s/%s: %s: %s",
                self.namespace,
                self.name,
                names.ANNOTATION_METRICS_ENDPOINTS,
                error,
            )
            endpoints = []
        readings = {}
        try:
            refused = self.shared.policy.prometheus_problems("prometheusUrl", source.prometheus_url)
            if refused:  # admitted before the policy: the operator calls only allowed URLs
                log.warning("%s/%s: %s", self.namespace, self.name, refused[0])
            elif source.prometheus_url:
                readings = await query_prometheus(
                    self.shared.session,
                    source.prometheus_url,
                    spec.model.name,
                    source.prometheus_selector or "",
                    self.namespace,
                )
            else:
                readings = await scrape(self.shared.session, endpoints, spec.model.name)
        except Exception as error:  # a metrics outage must not stop the loop
            log.warning("%s/%s: reading metrics: %s", self.namespace, self.name, error)
        return endpoints, self.totals.add(now, readings)

    def _gate_input(
        self, candidate: int, step: int, stable: str, snapshot: Snapshot
    ) -> GateInput | None:
        if not self.totals.endpoints:
            return None
        key = (candidate, step)
        baseline = self.baselines.setdefault(key, snapshot)
        cand = snapshot.since(baseline, str(candidate))
        base = snapshot.since(baseline, stable)
        gauges = self.totals.gauges

        def metrics(label: str, counters: Any) -> VersionMetrics:
            p95 = counters.quantile(0.95)
            return VersionMetrics(
                requests=int(counters.requests),
                errors=int(counters.errors),
                p95_ms=p95 * 1000.0 if p95 is not None else None,
                accuracy=gauges.accuracy.get(label),
                feedback_rows=int(counters.feedback_rows),
                compared=int(counters.compared),
                agreement=counters.agreement,
            )

        return GateInput(metrics(str(candidate), cand), metrics(stable, base))

    def _plan(
        self,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        resolution: Resolution,
        meta: Mapping[str, Any],
        snapshot: Snapshot,
        now: float,
    ) -> Plan | None:
        if spec.ensemble is not None:
            return None
        state = report.rollout_state(status)
        observed = None
        if state.candidate is not None and state.stable is not None:
            observed = self._gate_input(
                state.candidate, state.step or 0, str(state.stable), snapshot
            )
        annotations: Mapping[str, str] = meta.get("annotations") or {}
        promote = state.candidate is not None and annotations.get(names.ANNOTATION_PROMOTE) == str(
            state.candidate
        )
        plan = plan_rollout(
            spec.rollout, state, resolution.version, observed, now, promote_requested=promote
        )
        if plan.action in (Action.START, Action.ADVANCE) and plan.state.candidate is not None:
            # The step's window starts now: counts before this do not judge it.
            self.baselines[(plan.state.candidate, plan.state.step or 0)] = snapshot
        if plan.state.candidate is None:
            self.baselines.clear()
        return plan

    async def _write_scale(self, replicas: int) -> None:
        try:
            self._version = await self.shared.call(
                children.write_scale,
                self.shared.kube,
                self.namespace,
                self.name,
                replicas,
                self._version,
            )
        except StatusConflict:
            self.shared.status.outdated(self._pass_body)  # the next pass reads afresh
            raise

    def _context(
        self, spec: ModelDeploymentSpec, status: ModelDeploymentStatus, replicas: int
    ) -> builders.ServingContext:
        return builders.ServingContext(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            spec=spec,
            settings=self.shared.settings,
            version=status.active_version,
            replicas=replicas,
            admin_token=self._admin_token,
        )

    async def _apply_children(
        self, spec: ModelDeploymentSpec, status: ModelDeploymentStatus, replicas: int
    ) -> None:
        ctx = self._context(spec, status, replicas)
        for manifest in builders.children(ctx):
            await self.shared.call(self.applier.apply, manifest)
        status.selector = names.selector_string(names.server_selector(self.name))

    async def _route(
        self,
        spec: ModelDeploymentSpec,
        status: ModelDeploymentStatus,
        plan: Plan | None,
        endpoints: list[Endpoint],
    ) -> str | None:
        """Push the split to every server; a description of failures, or None."""
        if plan is None or status.active_version is None or not endpoints:
            return None
        candidate = status.candidate_version
        split = Split(
            stable=str(status.active_version),
            candidate=str(candidate) if candidate is not None else None,
            weight=float(plan.weight) if candidate is not None else 0.0,
            shadow=plan.shadow,
        )
        result = await apply_split(self.shared.session, endpoints, split, token=self._admin_token)
        if result.failed:
            failures = "; ".join(f"{name}: {error}" for name, error in result.failed)
            log.warning("%s/%s: routing: %s", self.namespace, self.name, failures)
            # Reachable servers that refused (e.g. a version that does not load) matter;
            # servers that are simply not reachable yet are the pods' readiness' business.
            refused = [e for _, e in result.failed if "HTTP" in e]
            return f"servers refused the split: {'; '.join(refused)}"[:1024] if refused else None
        if spec.rollout.strategy == RolloutStrategy.SHADOW and status.shadow is not None:
            status.shadow = report.with_accuracies(
                status.shadow, self.totals.gauges, split.stable, split.candidate
            )
        return None

    def _summarize(
        self, status: ModelDeploymentStatus, spec: ModelDeploymentSpec, snapshot: Snapshot
    ) -> None:
        earlier = self.totals.at_or_before(snapshot.time - SUMMARY_WINDOW)
        if earlier is None or earlier is snapshot or not self.totals.endpoints:
            return
        stable = (
            builders.ENSEMBLE_LABEL
            if spec.ensemble
            else (str(status.active_version) if status.active_version else None)
        )
        summary = report.live_summary(snapshot, earlier, self.totals.gauges, stable)
        if report.summary_changed(status.metrics, summary):
            status.metrics = summary
