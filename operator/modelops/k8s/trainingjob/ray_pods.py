"""The pods of one attempt: the Ray head (with the driver) and the Ray workers."""

from __future__ import annotations

import math

from modelops.api.quantity import quantity
from modelops.api.training import TrainingJobSpec
from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import STORE_MOUNT
from modelops.k8s.security import container_security, pod_security
from modelops.k8s.trainingjob import names
from modelops.k8s.trainingjob.context import (
    AUTH_TOKEN_KEY,
    CLIENT_PORT,
    DASHBOARD_PORT,
    GCS_PORT,
    METRICS_PORT,
    PROGRESS_FILE,
    SPEC_DIR,
    SPEC_FILE,
    JobContext,
    Manifest,
)
from modelops.lifecycle.training import Role
from modelops.lifecycle.training_rules import gang_size

GPU = "nvidia.com/gpu"

# A constant script (values arrive through the environment, never by formatting): the
# worker's init container waits until the head's GCS answers, as KubeRay's does, so a
# worker scheduled before its head does not fail the attempt.
WAIT_FOR_HEAD = 'until ray health-check --address "$RAY_ADDRESS" >/dev/null 2>&1; do sleep 2; done'


def _uses_local_store(spec: TrainingJobSpec) -> bool:
    uris = [spec.output.store_uri, spec.data.uri, spec.data.holdout_uri, spec.model.source]
    return any(uri and uri.startswith("file://") for uri in uris)


def _volumes(ctx: JobContext, role: Role) -> tuple[list[Manifest], list[Manifest]]:
    """Volumes and mounts: writable /tmp under a read-only root, shared memory, the store."""
    memory = ctx.settings.head_memory if role == Role.HEAD else ctx.spec.resources.memory_per_worker
    volumes: list[Manifest] = [
        {"name": "tmp", "emptyDir": {}},
        # Ray's object store lives in /dev/shm; the default 64Mi would starve it.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": memory}},
    ]
    mounts: list[Manifest] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if ctx.settings.store_volume_claim:
        claim = {"claimName": ctx.settings.store_volume_claim}
        volumes.append({"name": "store", "persistentVolumeClaim": claim})
        mounts.append({"name": "store", "mountPath": STORE_MOUNT})
    elif _uses_local_store(ctx.spec):
        # No shared volume configured: file:// stores are pod-local (try-out only).
        volumes.append({"name": "store", "emptyDir": {}})
        mounts.append({"name": "store", "mountPath": STORE_MOUNT})
    if role == Role.HEAD:
        config_map = {"name": names.spec_config_map(ctx.name, ctx.attempt)}
        volumes.append({"name": "spec", "configMap": config_map})
        mounts.append({"name": "spec", "mountPath": SPEC_DIR, "readOnly": True})
    return volumes, mounts


def _env(ctx: JobContext) -> list[Manifest]:
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "RAY_ADDRESS", "value": ctx.head_address},
        {"name": "MODELOPS_STORE_URI", "value": ctx.spec.output.store_uri},
        # The root file system is read-only: everything that wants a home gets /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        # Every Ray entry point (GCS, client, dashboard, node to node) checks this token.
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": names.auth_secret(ctx.name), "key": AUTH_TOKEN_KEY}
            },
        },
    ]


def _env_from() -> list[Manifest]:
    return pods.env_from()


def _scheduling(spec: TrainingJobSpec) -> Manifest:
    return pods.scheduling(spec.resources)


def _pod(
    ctx: JobContext, role: Role, name: str, labels: dict[str, str], body: Manifest
) -> Manifest:
    volumes, mounts = _volumes(ctx, role)
    for container in body["containers"] + body.get("initContainers", []):
        container.setdefault("volumeMounts", mounts)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **ctx.metadata(name, labels),
            "annotations": {names.ANNOTATION_VERSION: str(ctx.version)},
        },
        "spec": {
            "serviceAccountName": names.service_account(ctx.name),
            "automountServiceAccountToken": role == Role.HEAD,
            # A failed pod fails the attempt; the operator recreates the whole cluster,
            # which resumes from the last checkpoint. Restarting one pod in place would
            # leave the Ray cluster and the gang in an unknown state.
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": pod_security(),
            **_scheduling(ctx.spec),
            **body,
            "volumes": volumes,
        },
    }


def _pod_labels(ctx: JobContext, role: Role, index: int | None = None) -> dict[str, str]:
    labels = ctx.labels(
        **{
            names.LABEL_ROLE: role.value,
            names.LABEL_ATTEMPT: str(ctx.attempt),
            names.LABEL_COMPONENT: f"ray-{role.value}",
        }
    )
    if index is not None:
        labels[names.LABEL_INDEX] = str(index)
    return labels


def driver_args(ctx: JobContext) -> list[str]:
    """The head container's command: the driver (modelops_runtime.driver) with this attempt's job."""
    return [
        "python",
        "-m",
        "modelops_runtime.driver",
        "--spec",
        f"{SPEC_DIR}/{SPEC_FILE}",
        "--version",
        str(ctx.version),
        "--job-id",
        ctx.uid,
        "--workers",
        str(gang_size(ctx.spec)),
        "--progress-file",
        PROGRESS_FILE,
    ]


def head_pod(ctx: JobContext) -> Manifest:
    container = {
        "name": "ray-head",
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": driver_args(ctx),
        "env": _env(ctx),
        "envFrom": _env_from(),
        "ports": [
            {"name": "gcs", "containerPort": GCS_PORT},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "client", "containerPort": CLIENT_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "resources": {
            "requests": {"cpu": ctx.settings.head_cpu, "memory": ctx.settings.head_memory},
            "limits": {"memory": ctx.settings.head_memory},
        },
        "securityContext": container_security(),
        # The driver writes the TrainingResult here; on a crash the log tail stands in.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    name = names.head_pod(ctx.name, ctx.attempt)
    return _pod(ctx, Role.HEAD, name, _pod_labels(ctx, Role.HEAD), {"containers": [container]})


def _worker_resources(spec: TrainingJobSpec) -> Manifest:
    resources = spec.resources
    requests: dict[str, str] = {
        "cpu": resources.cpus_per_worker,
        "memory": resources.memory_per_worker,
    }
    # CPU is not limited (throttling slows the collective ops of all workers); memory is,
    # so one worker cannot starve its node. Extended resources need limit == request.
    limits: dict[str, str] = {"memory": resources.memory_per_worker}
    if resources.gpus_per_worker:
        requests[GPU] = limits[GPU] = str(resources.gpus_per_worker)
    return {"requests": requests, "limits": limits}


def worker_start_args(spec: TrainingJobSpec) -> list[str]:
    resources = spec.resources
    cpus = max(1, math.ceil(quantity(resources.cpus_per_worker)))
    return [
        "ray",
        "start",
        "--address=$(RAY_ADDRESS)",
        "--block",
        f"--num-cpus={cpus}",
        f"--num-gpus={resources.gpus_per_worker}",
        f"--memory={int(quantity(resources.memory_per_worker))}",
        "--disable-usage-stats",
    ]


def worker_pod(ctx: JobContext, index: int) -> Manifest:
    container = {
        "name": "ray-worker",
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": worker_start_args(ctx.spec),
        "env": _env(ctx),
        "envFrom": _env_from(),
        "resources": _worker_resources(ctx.spec),
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    wait = {
        "name": "wait-for-head",
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", WAIT_FOR_HEAD],
        "env": _env(ctx),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "securityContext": container_security(),
    }
    name = names.worker_pod(ctx.name, ctx.attempt, index)
    body = {"initContainers": [wait], "containers": [container]}
    return _pod(ctx, Role.WORKER, name, _pod_labels(ctx, Role.WORKER, index), body)
