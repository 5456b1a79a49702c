"""One reconcile of one TrainingJob: read, decide (modelops.lifecycle), write.

Synchronous on purpose: it runs on a worker thread, so the blocking client never
stalls Kopf's event loop. The order of writes makes a crash at any point harmless:
the status goes first (a new attempt is recorded before its pods exist), then the
children, created under deterministic names so that a repeat is a 409, not a duplicate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelops.api.base import GROUP, VERSION
from modelops.api.training import TrainingJobSpec, TrainingJobStatus
from modelops.api.validation import problems_from_error
from modelops.k8s.kube import ApiError, Kube, custom_path, manifest_path, namespaced_path
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.trainingjob import builders, names
from modelops.k8s.versions import VersionAllocator
from modelops.lifecycle.status import status_changed, status_patch
from modelops.lifecycle.training import (
    EventNote,
    Observed,
    PodView,
    invalid_spec_status,
    plan,
)

RESOURCE = names.PLURAL
# How long a pod we created may be missing from the pod index before we create it again.
POD_GRACE = 30.0
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    # Whole seconds, as Kubernetes writes its own timestamps.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class TrainingSettings:
    """How the controller behaves, beyond what each job's spec says."""

    cluster: builders.ClusterSettings
    retry_backoff_seconds: float = 10.0
    retry_backoff_limit_seconds: float = 360.0
    resync_seconds: float = 300.0
    workers: int = 8


@dataclass(frozen=True)
class Outcome:
    """What the control loop needs after a reconcile."""

    events: tuple[EventNote, ...] = ()
    requeue_after: float | None = None
    generation: int | None = None


class StatusConflict(Exception):
    """The job changed between our read and our status write; reconcile again."""


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
        # Per job uid: the resourceVersion our last status write was computed from. A watched
        # copy still at that version has not caught up with the write: read afresh instead.
        self._written_from: dict[str, str] = {}
        self._lock = threading.Lock()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._ensured.pop(uid, None)
            self._created.pop(uid, None)
            self._written_from.pop(uid, None)

    def _is_stale(self, job: dict[str, Any]) -> bool:
        meta = job.get("metadata") or {}
        with self._lock:
            written_from = self._written_from.get(str(meta.get("uid")))
        return written_from is not None and written_from == meta.get("resourceVersion")

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
        job = seen
        if job is None or self._is_stale(job):
            try:
                job = self.kube.get(path)
            except ApiError as error:
                if error.not_found:
                    return Outcome()
                raise
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return Outcome()  # the delete handler owns the rest
        generation = meta.get("generation")
        raw_status: dict[str, Any] = job.get("status") or {}
        status = _parse_status(raw_status)
        now = self.clock()
        try:
            spec = TrainingJobSpec.model_validate(job.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            desired, events = invalid_spec_status(status, problems, now, generation)
            self._write_status(path, meta, raw_status, desired)
            return Outcome(events=tuple(events), generation=generation)

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
        self._write_status(path, meta, raw_status, decision.status)
        ctx = builders.JobContext(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            version=version,
            attempt=decision.attempt,
            settings=self.settings.cluster,
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
        self,
        path: str,
        meta: dict[str, Any],
        current: dict[str, Any],
        desired: TrainingJobStatus,
    ) -> None:
        wanted = desired.to_dict()
        if not status_changed(_parse_status(current).to_dict(), wanted):
            return
        # The resourceVersion makes the write conditional: if the job changed since our
        # read, the API server refuses (409) instead of letting a stale decision win.
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": status_patch(current, wanted),
        }
        with self._lock:
            # Whatever the outcome, the copy at this version is now known to be outdated.
            self._written_from[str(meta["uid"])] = str(meta["resourceVersion"])
        try:
            self.kube.merge_patch(f"{path}/status", body)
        except ApiError as error:
            if error.conflict:
                raise StatusConflict(str(error)) from error
            raise
        self.metrics.api_writes.labels("patch", "TrainingJobStatus").inc()

    # -- children -------------------------------------------------------------------------

    def _ensure_cluster(self, ctx: builders.JobContext, existing_pods: set[str]) -> None:
        with self._lock:
            ensured = self._ensured.setdefault(ctx.uid, set())
            created = self._created.setdefault(ctx.uid, {})
        now = time.monotonic()
        for manifest in builders.cluster(ctx):
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
        ):
            self._delete(namespaced_path(kind, namespace, child), kind)
        self.metrics.api_writes.labels("deletecollection", "Pod").inc()


def _parse_status(raw: dict[str, Any]) -> TrainingJobStatus:
    """The stored status; a status this version cannot read starts over from observation."""
    try:
        return TrainingJobStatus.model_validate(raw)
    except ValidationError:
        return TrainingJobStatus()
