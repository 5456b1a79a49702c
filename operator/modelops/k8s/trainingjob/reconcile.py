"""One reconcile of one TrainingJob: read, decide (modelops.lifecycle), write.

Synchronous on purpose: it runs on a worker thread, so the blocking client never
stalls Kopf's event loop. The order of writes makes a crash at any point harmless:
the status goes first (a new attempt is recorded before its pods exist), then the
children, created under deterministic names so that a repeat is a 409, not a duplicate.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modelops.api.base import GROUP, VERSION
from modelops.api.tenancy import TenancyPolicy
from modelops.api.training import TrainingJobSpec, TrainingJobStatus
from modelops.api.validation import problems_from_error
from modelops.k8s.controller.status import Clock, Outcome, StatusWriter, utc_now
from modelops.k8s.kube import Kube, custom_path, manifest_path, namespaced_path
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.trainingjob import builders, names
from modelops.k8s.versions import VersionAllocator
from modelops.lifecycle.training import (
    Observed,
    PodView,
    invalid_spec_status,
    plan,
)

RESOURCE = names.PLURAL
# How long a pod we created may be missing from the pod index before we create it again.
POD_GRACE = 30.0


@dataclass(frozen=True)
class TrainingSettings:
    """How the controller behaves, beyond what each job's spec says."""

    cluster: builders.ClusterSettings
    retry_backoff_seconds: float = 10.0
    retry_backoff_limit_seconds: float = 360.0
    resync_seconds: float = 300.0
    workers: int = 8
    policy: TenancyPolicy = field(default_factory=TenancyPolicy)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        versions: VersionAllocator,
        settings: TrainingSettings,
        metrics: OperatorMetrics,
        clock: Clock = utc_now,
    ) -> None:
        self.kube = kube
        self.versions = versions
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        # Per job uid: the children already ensured, so a steady job costs no writes.
        self._ensured: dict[str, set[str]] = {}
        # Per job uid: pods created and when, for as long as the pod index may not show them.
        self._created: dict[str, dict[str, float]] = {}
        self.status = StatusWriter(kube, metrics, names.KIND)
        self._lock = threading.Lock()

    def forget(self, uid: str) -> None:
        self.status.forget(uid)
        with self._lock:
            self._ensured.pop(uid, None)
            self._created.pop(uid, None)

    # -- the reconcile --------------------------------------------------------------------

    def reconcile(
        self,
        namespace: str,
        name: str,
        pods: Iterable[PodView],
        seen: dict[str, Any] | None = None,
    ) -> Outcome:
        """Reconcile from `seen` (the job as the watch delivered it), or from a fresh read
        when there is none or it predates our own last status write."""
        path = custom_path(GROUP, VERSION, RESOURCE, namespace, name)
        job = self.status.read_live(path, seen)
        if job is None:
            return Outcome()
        meta = job["metadata"]
        generation = meta.get("generation")
        raw_status: dict[str, Any] = job.get("status") or {}
        status = _parse_status(raw_status)
        now = self.clock()
        try:
            spec = TrainingJobSpec.model_validate(job.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            desired, events = invalid_spec_status(status, problems, now, generation)
            self._write_status(path, job, raw_status, desired)
            return Outcome(events=tuple(events), generation=generation)
        # The same tenancy rules as admission: an object admitted without the webhook (or
        # before the policy changed) never gets pods that break them.
        refused = self.settings.policy.problems("TrainingJob", spec)
        if refused and not status.attempts:
            desired, events = invalid_spec_status(
                status, "; ".join(str(p) for p in refused), now, generation
            )
            self._write_status(path, job, raw_status, desired)
            return Outcome(events=tuple(events), generation=generation)

        # From here on the spec names the namespace's own folder of the store.
        root = self.settings.cluster.store_root(spec.output.store_uri, namespace)
        spec = spec.model_copy(
            update={"output": spec.output.model_copy(update={"store_uri": root})}
        )
        uid = str(meta["uid"])
        version = self.versions.allocate(namespace, spec.output.model_name, uid, name)
        decision = plan(
            Observed(
                spec=spec,
                status=status,
                generation=generation,
                pods=tuple(pods),
                version=version,
                job_id=uid,
                now=now,
                retry_backoff_seconds=self.settings.retry_backoff_seconds,
                retry_backoff_limit_seconds=self.settings.retry_backoff_limit_seconds,
            )
        )
        self._write_status(path, job, raw_status, decision.status)
        search = decision.status.search
        self.metrics.observe_trials(namespace, name, search.trial_counts if search else None)
        ctx = builders.JobContext(
            name, namespace, uid, spec, version, decision.attempt, self.settings.cluster
        )
        if decision.create_cluster:
            self._ensure_cluster(ctx, {p.name for p in pods})
        for pod in decision.delete_pods:
            self._delete(namespaced_path("Pod", namespace, pod), "Pod")
        if decision.delete_all:
            self.delete_children(namespace, name)
        return Outcome(
            events=decision.events,
            requeue_after=decision.requeue_after,
            generation=generation,
        )

    def _write_status(
        self, path: str, job: dict[str, Any], current: dict[str, Any], desired: TrainingJobStatus
    ) -> None:
        self.status.write(path, job, _parse_status(current).to_dict(), desired.to_dict())

    # -- children -------------------------------------------------------------------------

    def _ensure_cluster(self, ctx: builders.JobContext, existing_pods: set[str]) -> None:
        with self._lock:
            ensured = self._ensured.setdefault(ctx.uid, set())
            created = self._created.setdefault(ctx.uid, {})
        now = time.monotonic()
        # A fresh token is used only when the job's Secret does not exist yet: the Secret is
        # created once and immutable, so every attempt of the job shares its first token.
        for manifest in builders.cluster(ctx, secrets.token_urlsafe(32)):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            if kind == "Pod":
                # Pods are checked against what is observed, not remembered: a pod that
                # disappears (deleted by someone, evicted and removed) is created again,
                # once the index has had time to show the one we made.
                if name in existing_pods or now - created.get(name, -POD_GRACE) < POD_GRACE:
                    continue
                if self.kube.create_if_absent(manifest):
                    self.metrics.api_writes.labels("create", kind).inc()
                created[name] = now
                continue
            key = f"{ctx.attempt}/{kind}/{name}"
            if key in ensured:
                continue
            if self.kube.create_if_absent(manifest):
                self.metrics.api_writes.labels("create", kind).inc()
            elif kind == "Role":
                # The grant covers the head pods of all attempts the job may now run.
                self.kube.merge_patch(manifest_path(manifest, True), {"rules": manifest["rules"]})
                self.metrics.api_writes.labels("patch", kind).inc()
            ensured.add(key)

    def _delete(self, path: str, kind: str) -> None:
        if self.kube.delete(path):
            self.metrics.api_writes.labels("delete", kind).inc()

    def delete_children(self, namespace: str, name: str) -> None:
        """Remove everything the job created; artifacts in the store are not touched."""
        selector = names.selector(name)
        self.kube.delete_collection(namespaced_path("Pod", namespace), selector)
        self.kube.delete_collection(namespaced_path("ConfigMap", namespace), selector)
        for kind, child in (
            ("Service", names.head_service(name)),
            ("RoleBinding", names.service_account(name)),
            ("Role", names.service_account(name)),
            ("ServiceAccount", names.service_account(name)),
            ("Secret", names.auth_secret(name)),
            ("NetworkPolicy", names.network_policy(name)),
        ):
            self._delete(namespaced_path(kind, namespace, child), kind)
        self.metrics.api_writes.labels("deletecollection", "Pod").inc()


def _parse_status(raw: dict[str, Any]) -> TrainingJobStatus:
    """The stored status; a status this version cannot read starts over from observation."""
    try:
        return TrainingJobStatus.model_validate(raw)
    except ValidationError:
        return TrainingJobStatus()
