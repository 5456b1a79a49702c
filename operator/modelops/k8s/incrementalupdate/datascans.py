"""How an IncrementalUpdate looks at its data: in the operator's process, or in a scan pod.

Both give the same reduced report (`modelops.lifecycle.datascan.DataScan`) of the dataset
against the snapshot the serving version was trained on:

- `data.RuntimeData` reads the data with the operator's own access. It suits an operator
  that runs beside its store (out of cluster, or with the store mounted) and local mode.
- `JobScanner` runs `python -m modelops_runtime scan` as a Job in the update's namespace,
  with the store volume and credentials its training pods get, and reads the report from
  the pod's termination message. The operator then never mounts or reads a tenant's data
  (a PersistentVolumeClaim cannot be mounted across namespaces anyway), and a huge or
  slow dataset costs the tenant's pod its time, not the operator's workers.

A scanner answers None while the look is still under way; the reconciler asks again soon.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from modelops.k8s.controller import pods
from modelops.k8s.incrementalupdate import builders, names
from modelops.k8s.kube import ApiError, Kube, custom_path, namespaced_path
from modelops.k8s.security import container_security
from modelops.lifecycle import datascan

log = logging.getLogger(__name__)

SCAN_CONTAINER = "scan"
ANNOTATION_BASELINE = f"{names.DOMAIN}/baseline-version"
ROLE_SCAN = "scan"
# How soon to look again while a scan pod runs.
POLL_SECONDS = 3.0


class ScanFailed(Exception):
    """The data could not be listed; the message says why (shown in the status)."""


# -- the scan Job ---------------------------------------------------------------------------


def scan_job_name(update: str) -> str:
    return names.child_name(update, "scan")


def scan_labels(update: str, model: str) -> dict[str, str]:
    return {
        names.LABEL_NAME: "modelops-scan",
        names.LABEL_INSTANCE: names.label_value(update),
        names.LABEL_COMPONENT: ROLE_SCAN,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_UPDATE: names.label_value(update),
        names.LABEL_MODEL: model,
        names.LABEL_ROLE: ROLE_SCAN,
    }


def cache_uri(ctx: builders.UpdateContext) -> str:
    """The scan pods' fingerprint cache: beside the model's versions, one per update."""
    return f"{ctx.store.rstrip('/')}/{ctx.model}/.scan-{ctx.name}.json"


def scan_args(ctx: builders.UpdateContext, baseline: int | None) -> list[str]:
    data = ctx.recipe.data
    args = [
        "python", "-m", "modelops_runtime", "scan",
        "--data", data.uri, "--format", data.format.value,
        "--store", ctx.store, "--model", ctx.model,
        "--cache", cache_uri(ctx),
        "--termination-log", builders.TERMINATION_LOG,
    ]  # fmt: skip
    if baseline is not None:
        args += ["--baseline", str(baseline)]
    return args


def scan_job(ctx: builders.UpdateContext, baseline: int | None) -> builders.Manifest:
    """One pod that lists and fingerprints the data and reports as its termination message."""
    # Writable: the fingerprint cache is kept in the store.
    volumes, mounts = pods.tmp_and_store(ctx.settings.store_volume_claim, writable=True)
    labels = scan_labels(ctx.name, ctx.model)
    annotations = {ANNOTATION_BASELINE: "" if baseline is None else str(baseline)}
    container = {
        "name": SCAN_CONTAINER,
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": scan_args(ctx, baseline),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "envFrom": pods.env_from(),
        # Listing and hashing stream in bounded chunks; a small pod is enough.
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": container_security(),
        "volumeMounts": mounts,
        "terminationMessagePath": builders.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **ctx.metadata(scan_job_name(ctx.name), labels),
            "annotations": annotations,
        },
        "spec": {
            # A failed scan is reported and the next period scans again: no retries here.
            "backoffLimit": 0,
            "activeDeadlineSeconds": ctx.settings.deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": pods.job_pod([container], volumes, pods.scheduling(ctx.recipe.resources)),
            },
        },
    }


def _message(pod: Mapping[str, Any]) -> str:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == SCAN_CONTAINER:
            terminated = (status.get("state") or {}).get("terminated") or {}
            return str(terminated.get("message") or "")
    return ""


def _failed(job: Mapping[str, Any]) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return f"{condition.get('reason', 'Failed')}: {condition.get('message', '')}".rstrip(
                ": "
            )
    return None


def scan_outcome(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> datascan.ScanOutcome | None:
    """What a finished scan Job reported; None while it runs (pure)."""
    done = [p for p in pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    for pod in done:
        parsed = datascan.parse(_message(pod))
        if parsed is not None:
            return parsed
    failure = _failed(job)
    if failure is None and not done:
        return None
    tail = _message(done[-1])[-400:] if done else ""
    reason = failure or "the scan pod finished without a report"
    return datascan.ScanOutcome(error=f"scan job: {reason}{'; ' + tail if tail else ''}")


class JobScanner:
    """Scans in a Job in the update's namespace; one Job per look, removed once read."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _jobs(self, namespace: str) -> str:
        return custom_path("batch", "v1", "jobs", namespace)

    def scan(self, ctx: builders.UpdateContext, baseline: int | None) -> datascan.DataScan | None:
        name = scan_job_name(ctx.name)
        path = f"{self._jobs(ctx.namespace)}/{name}"
        try:
            job = self.kube.get(path)
        except ApiError as error:
            if not error.not_found:
                raise
            self._create(ctx, baseline)
            return None
        owners = (job.get("metadata") or {}).get("ownerReferences") or ()
        wanted = "" if baseline is None else str(baseline)
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        if not any(o.get("uid") == ctx.uid for o in owners) or (
            annotations.get(ANNOTATION_BASELINE) != wanted
        ):
            # An earlier update's leftover, or a scan against a version no longer served.
            self.kube.delete(path)
            return None
        pods = self.kube.list(namespaced_path("Pod", ctx.namespace), f"job-name={name}")
        outcome = scan_outcome(job, pods)
        if outcome is None:
            return None
        self.kube.delete(path)
        if outcome.scan is None:
            raise ScanFailed(outcome.error or "scan failed")
        return outcome.scan

    def _create(self, ctx: builders.UpdateContext, baseline: int | None) -> None:
        try:
            self.kube.create(scan_job(ctx, baseline))
        except ApiError as error:
            if error.conflict:
                return  # the previous one is still being removed: the next pass creates it
            raise ScanFailed(f"could not create the scan job: {error.message}") from error

    def forget(self, ctx: builders.UpdateContext) -> None:
        """The Job is owned by the update: the garbage collector removes it after it."""
