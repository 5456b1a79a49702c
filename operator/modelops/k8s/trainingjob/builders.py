"""Pure builders of a TrainingJob's children: plain dicts, asserted as dicts in unit tests.

One attempt is one Ray cluster: a head pod (Ray head plus the driver that starts the
training once the gang of workers has joined) and the worker pods (Ray workers), behind
a headless head Service. Per job there is a ServiceAccount whose Role lets the driver
patch its own pod (the progress annotation) and nothing else, a Secret with the Ray
token every node of the job presents (Ray token authentication: GCS, client and
dashboard refuse anyone without it), and a NetworkPolicy that admits only the job's own
pods; per attempt there is an immutable ConfigMap with the spec the attempt runs.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from modelops.api.base import API_VERSION
from modelops.api.training import TrainingJobSpec
from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import STORE_MOUNT as STORE_MOUNT
from modelops.k8s.controller.pods import STORE_SECRET as STORE_SECRET
from modelops.k8s.security import container_security, pod_security
from modelops.k8s.trainingjob import names
from modelops.lifecycle.training import Role, gang_size

Manifest = dict[str, Any]

SPEC_DIR = "/etc/modelops/spec"
SPEC_FILE = "trainingjob.yaml"
PROGRESS_FILE = "/tmp/modelops/progress.json"
AUTH_TOKEN_KEY = "auth_token"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
METRICS_PORT = 8080
GPU = "nvidia.com/gpu"

# A constant script (values arrive through the environment, never by formatting): the
# worker's init container waits until the head's GCS answers, as KubeRay's does, so a
# worker scheduled before its head does not fail the attempt.
WAIT_FOR_HEAD = 'until ray health-check --address "$RAY_ADDRESS" >/dev/null 2>&1; do sleep 2; done'

_SUFFIX = {
    "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^\+?([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: "500m" → 0.5, "2Gi" → 2147483648."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class ClusterSettings:
    """Operator-wide settings that shape the pods (from OperatorConfig)."""

    image: str
    store_volume_claim: str | None = None
    head_cpu: str = "1"
    head_memory: str = "2Gi"


@dataclass(frozen=True)
class JobContext:
    """One attempt of one TrainingJob, as the builders need it."""

    name: str
    namespace: str
    uid: str
    spec: TrainingJobSpec
    version: int
    attempt: int
    settings: ClusterSettings

    @property
    def image(self) -> str:
        return self.spec.resources.image or self.settings.image

    @property
    def model(self) -> str:
        return self.spec.output.model_name

    def labels(self, **extra: str) -> dict[str, str]:
        return {**names.job_labels(self.name, self.model), **extra}

    def metadata(self, name: str, labels: dict[str, str] | None = None) -> Manifest:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": labels or self.labels(),
            "ownerReferences": [names.owner_reference(self.name, self.uid)],
        }

    @property
    def head_address(self) -> str:
        service = names.head_service(self.name)
        return f"{service}.{self.namespace}.svc:{GCS_PORT}"


# --------------------------------------------------------------------------------------
# Per job: Service, ServiceAccount, Role, RoleBinding
# --------------------------------------------------------------------------------------


def head_service(ctx: JobContext) -> Manifest:
    """Headless: workers reach the head's GCS by DNS, even before the head reports ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(names.head_service(ctx.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                names.LABEL_JOB: names.job_label(ctx.name),
                names.LABEL_ROLE: Role.HEAD.value,
            },
            "ports": [
                {"name": "gcs", "port": GCS_PORT, "targetPort": GCS_PORT},
                {"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT},
                {"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def auth_secret(ctx: JobContext, token: str) -> Manifest:
    """The job's Ray token; pods read it through `secretKeyRef`, the operator never again."""
    encoded = base64.b64encode(token.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": ctx.metadata(names.auth_secret(ctx.name)),
        "type": "Opaque",
        "immutable": True,
        "data": {AUTH_TOKEN_KEY: encoded},
    }


def network_policy(ctx: JobContext) -> Manifest:
    """Ingress to the job's pods from the job's own pods only, on every port.

    Ray nodes talk to each other on ports Ray picks at start (object manager, workers),
    so the policy names peers, not ports. The operator reads the pods through the API
    server and never connects to them, so nothing else is admitted.
    """
    job = {names.LABEL_JOB: names.job_label(ctx.name)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": ctx.metadata(names.network_policy(ctx.name)),
        "spec": {
            "podSelector": {"matchLabels": job},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": job}}]}],
        },
    }


def service_account(ctx: JobContext) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": ctx.metadata(names.service_account(ctx.name)),
        # Only the head pod mounts a token (it opts in); workers never need the API.
        "automountServiceAccountToken": False,
    }


def role(ctx: JobContext) -> Manifest:
    """The driver may read and patch its own head pod: the progress annotation, no more.

    `resourceNames` lists the head pod of every attempt the job may run, so a retry needs
    no new grant; pods' images are patchable, so a wider grant would let a training job
    take over other pods.
    """
    attempts = range(max(ctx.spec.backoff_limit, ctx.attempt) + 1)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": ctx.metadata(names.service_account(ctx.name)),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [names.head_pod(ctx.name, a) for a in attempts],
                "verbs": ["get", "patch"],
            }
        ],
    }


def role_binding(ctx: JobContext) -> Manifest:
    name = names.service_account(ctx.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": ctx.metadata(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ctx.namespace}],
    }


# --------------------------------------------------------------------------------------
# Per attempt: the spec ConfigMap and the pods
# --------------------------------------------------------------------------------------


def spec_config_map(ctx: JobContext) -> Manifest:
    """The TrainingJob manifest the runtime reads (`--spec`), frozen for the attempt."""
    manifest = {
        "apiVersion": API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": ctx.name, "namespace": ctx.namespace, "uid": ctx.uid},
        "spec": ctx.spec.to_dict(),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": ctx.metadata(
            names.spec_config_map(ctx.name, ctx.attempt),
            ctx.labels(**{names.LABEL_ATTEMPT: str(ctx.attempt)}),
        ),
        "immutable": True,
        "data": {SPEC_FILE: yaml.safe_dump(manifest, sort_keys=False)},
    }


def _uses_local_store(spec: TrainingJobSpec) -> bool:
    uris = [spec.output.store_uri, spec.data.uri, spec.data.holdout_uri]
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


def cluster(ctx: JobContext, token: str) -> list[Manifest]:
    """Every child of one attempt, in creation order.

    The API server refuses a pod whose ServiceAccount does not exist, and the head cannot
    start without its spec; the NetworkPolicy and the token come before any pod, so no
    pod is ever reachable unauthenticated. Everything else a pod needs later (the Service
    when a worker looks up the head, the Role when the driver reports progress), so the
    pods go first after those: scheduling and image pulls start sooner.
    """
    return [
        network_policy(ctx),
        auth_secret(ctx, token),
        service_account(ctx),
        spec_config_map(ctx),
        head_pod(ctx),
        *[worker_pod(ctx, i) for i in range(ctx.spec.resources.workers)],
        head_service(ctx),
        role(ctx),
        role_binding(ctx),
    ]
