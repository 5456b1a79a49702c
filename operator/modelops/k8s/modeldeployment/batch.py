"""Batch prediction of a ModelDeployment: one Job per version and dataset, and its counts.

The counts come from the Job's `_progress.json` when the output is a file:// folder the
operator can see, else from the finished pod's termination message (read once).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from modelops.api.deployment import BatchPredictionStatus, ModelDeploymentStatus
from modelops.k8s.kube import ApiError, namespaced_path
from modelops.k8s.modeldeployment import batchjob, builders, children
from modelops.k8s.modeldeployment.shared import Shared

log = logging.getLogger(__name__)

PROGRESS_FILE = "_progress.json"  # written by `modelops_runtime predict-batch`


async def reconcile(
    shared: Shared,
    ctx: builders.ServingContext,
    jobs: Callable[[], Sequence[Mapping[str, Any]]],
    status: ModelDeploymentStatus,
) -> None:
    """Create the batch Job of the stable version when missing; record its progress."""
    batch = ctx.spec.batch_prediction
    if batch is None or status.active_version is None:
        status.batch_prediction = None
        return
    manifest = batchjob.batch_job(ctx)
    job_name = manifest["metadata"]["name"]
    job = next((j for j in jobs() if j.get("name") == job_name), None)
    if job is None:
        previous = status.batch_prediction
        finished = previous is not None and previous.phase in ("Succeeded", "Failed")
        if finished and previous is not None and previous.job_name == job_name:
            return  # finished and since removed (TTL or by hand): keep the record
        try:
            await shared.call(children.create_if_absent, shared.kube, manifest)
        except ApiError as error:
            log.warning("%s/%s: batch job: %s", ctx.namespace, ctx.name, error)
        job = {"name": job_name}
    progress = local_progress(batch.output_uri)
    if progress.get("version") != status.active_version:
        progress = {}  # an earlier run's file
    if not progress and job_phase(job) == "Succeeded":
        progress = await reported_progress(shared, ctx, job_name, status)
    status.batch_prediction = BatchPredictionStatus(
        phase=job_phase(job),
        version=status.active_version,
        output_uri=batch.output_uri,
        job_name=job_name,
        shards_done=int(progress.get("shards_done", 0))
        + int(progress.get("shards_skipped", 0)),
        shards_total=int(progress.get("shards_total", 0)),
    )


async def reported_progress(
    shared: Shared, ctx: builders.ServingContext, job_name: str, status: ModelDeploymentStatus
) -> dict[str, Any]:
    """A finished batch Job's counts, from its pod's termination message (read once)."""
    previous = status.batch_prediction
    if previous is not None and previous.job_name == job_name and previous.shards_total:
        return {
            "shards_done": previous.shards_done,
            "shards_total": previous.shards_total,
        }
    try:
        pods = await shared.call(
            shared.kube.list,
            namespaced_path("Pod", ctx.namespace),
            f"job-name={job_name}",
        )
    except ApiError as error:
        log.warning("%s/%s: batch job pods: %s", ctx.namespace, ctx.name, error)
        return {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            continue
        progress = batch_report(pod)
        if progress.get("version") == status.active_version:
            return progress
    return {}


def batch_report(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The counts a batch prediction pod left as its termination message; {} when none."""
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated") or {}
        try:
            loaded = json.loads(terminated.get("message") or "")
        except ValueError:
            continue
        if isinstance(loaded, dict) and all(
            isinstance(loaded.get(key), int) for key in ("shards_done", "shards_total")
        ):
            return loaded
    return {}


def local_progress(output_uri: str) -> dict[str, Any]:
    """The batch job's `_progress.json` when the output is a file:// folder visible here."""
    if not output_uri.startswith("file://"):
        return {}
    path = os.path.join(output_uri[len("file://") :], PROGRESS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def job_phase(job: Mapping[str, Any]) -> Any:
    if job.get("succeeded"):
        return "Succeeded"
    if job.get("failed"):
        return "Failed"
    if job.get("active"):
        return "Running"
    return "Pending"
