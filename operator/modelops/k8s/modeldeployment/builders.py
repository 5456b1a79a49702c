"""Pure builders of a ModelDeployment's children: plain dicts, asserted in unit tests.

One inference Deployment runs the stable version (or the ensemble); during a
canary or shadow rollout the operator loads the candidate *into the same
servers* through their admin routing endpoint (see rollout.py in this package),
so the pod template only ever names the stable version and a traffic step never
restarts a pod. A version change of the template is a rolling update with
`maxUnavailable: 0` behind readiness probes. A ClusterIP Service named like the
ModelDeployment fronts the pods; a PodDisruptionBudget keeps drains from taking
more than one at a time; a Secret holds the deployment's own admin token, which only
its servers mount. Batch prediction's Job (batchjob.py) runs the same version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelops.api.deployment import ModelDeploymentSpec
from modelops.api.training import EnsembleMethod
from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import STORE_MOUNT as STORE_MOUNT
from modelops.k8s.controller.pods import STORE_SECRET as STORE_SECRET
from modelops.k8s.controller.pods import TERMINATION_LOG as TERMINATION_LOG
from modelops.k8s.modeldeployment import credentials, names
from modelops.k8s.security import container_security, pod_security

Manifest = dict[str, Any]

HTTP_PORT = 8080
# The Open Inference Protocol over gRPC; the Service exposes it on the same number.
GRPC_PORT = 8081
SERVICE_PORT = 80
GPU = "nvidia.com/gpu"
ENSEMBLE_LABEL = "ensemble"
DRAIN_SECONDS = 20
# Endpoints leave the Service a moment after a pod starts terminating; a short
# pause before SIGTERM lets kube-proxy catch up, so no request hits a closed port.
PRE_STOP_SECONDS = 5


@dataclass(frozen=True)
class ServingSettings(pods.PodSettings):
    """Operator-wide settings that shape the pods (from OperatorConfig)."""


@dataclass(frozen=True)
class ServingContext:
    """One ModelDeployment, with the decisions the builders need."""

    name: str
    namespace: str
    uid: str
    spec: ModelDeploymentSpec
    settings: ServingSettings
    version: int | None
    replicas: int
    admin_token: str = field(repr=False)

    @property
    def model(self) -> str:
        return self.spec.model.name

    def labels(self, role: str = names.ROLE_SERVER) -> dict[str, str]:
        return names.labels(self.name, self.model, role)

    def metadata(self, name: str, role: str = names.ROLE_SERVER) -> Manifest:
        owner = names.owner_reference(self.name, self.uid)
        return pods.metadata(name, self.namespace, self.labels(role), owner)

    @property
    def image(self) -> str:
        return self.spec.resources.image or self.settings.image

    @property
    def version_label(self) -> str:
        """The label the servers report the stable version under."""
        if self.spec.ensemble is not None:
            return ENSEMBLE_LABEL
        if self.version is None:
            raise ValueError(f"{self.name}: no version resolved yet")
        return str(self.version)


def members_arg(spec: ModelDeploymentSpec) -> str:
    """`1,2,3`, or `1:30,2:70` for a weighted ensemble (the server's --members)."""
    assert spec.ensemble is not None
    if spec.ensemble.method == EnsembleMethod.WEIGHTED:
        return ",".join(f"{m.version}:{m.weight}" for m in spec.ensemble.members)
    return ",".join(str(m.version) for m in spec.ensemble.members)


def server_args(ctx: ServingContext) -> list[str]:
    """The server's command line: model, stable version and the batching settings."""
    batching = ctx.spec.batching
    args = [
        "python",
        "-m",
        "modelops_runtime",
        "serve",
        "--store",
        ctx.spec.model.store_uri,
        "--model",
        ctx.model,
        "--version",
        ctx.version_label,
        "--host",
        "0.0.0.0",
        "--port",
        str(HTTP_PORT),
        "--grpc-port",
        str(GRPC_PORT),
        "--max-batch-size",
        str(batching.max_batch_size),
        "--max-wait-ms",
        f"{batching.max_wait_ms:g}",
        "--max-queue",
        str(batching.max_queue),
        "--timeout-ms",
        str(batching.timeout_ms),
        "--drain-seconds",
        str(DRAIN_SECONDS),
        # Feedback lands on any replica behind the Service: ids name the pod that
        # answered, and the peers (the headless Service's addresses) forward to it.
        "--advertise-address",
        f"$(POD_IP):{HTTP_PORT}",
        "--peers-dns",
        names.peers_service(ctx.name),
    ]
    if ctx.spec.ensemble is not None:
        args += ["--members", members_arg(ctx.spec), "--ensemble-method", ctx.spec.ensemble.method]
    return args


def resources(spec: ModelDeploymentSpec) -> Manifest:
    res = spec.resources
    requests: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    # Memory is limited so one replica cannot starve its node; CPU is not (throttling
    # a latency-bound server hurts p95 more than sharing spare cores does).
    limits: dict[str, str] = {"memory": res.memory}
    if res.gpu:
        # Extended resources must have limit == request.
        requests[GPU] = limits[GPU] = str(res.gpu)
    return {"requests": requests, "limits": limits}


def store_volumes(
    ctx: ServingContext, *, writable: bool = False
) -> tuple[list[Manifest], list[Manifest]]:
    """A writable /tmp under the read-only root, and the store: read-only for servers,
    writable for batch prediction, which writes its output there."""
    return pods.tmp_and_store(ctx.settings.store_volume_claim, writable=writable)


def _server_volumes(ctx: ServingContext) -> tuple[list[Manifest], list[Manifest]]:
    """/tmp, the store read-only, and the deployment's own admin token."""
    volumes, mounts = store_volumes(ctx)
    volume, mount = credentials.token_volume(names.admin_secret(ctx.name))
    return [*volumes, volume], [*mounts, mount]


def pod_env() -> list[Manifest]:
    """What every pod of a ModelDeployment knows about itself."""
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _env_from() -> list[Manifest]:
    return pods.env_from()


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _scheduling(ctx: ServingContext) -> Manifest:
    res = ctx.spec.resources
    out: Manifest = {
        # Spread replicas over nodes when possible; never refuse to schedule for it.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": names.server_selector(ctx.name)},
            }
        ],
        **pods.scheduling(res),
    }
    return out


def server_container(ctx: ServingContext) -> Manifest:
    _, mounts = _server_volumes(ctx)
    return {
        "name": "server",
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": server_args(ctx),
        "env": [*pod_env(), credentials.token_file_env()],
        "envFrom": _env_from(),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": resources(ctx.spec),
        "securityContext": container_security(),
        # Loading a large model can take minutes; liveness starts only after this passes.
        "startupProbe": _probe("/v2/health/live", 2, 150),
        "readinessProbe": _probe("/v2/health/ready", 2, 2),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def deployment(ctx: ServingContext) -> Manifest:
    volumes, _ = _server_volumes(ctx)
    rolling = ctx.spec.rollout.rolling
    selector = names.server_selector(ctx.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **ctx.metadata(names.deployment(ctx.name)),
            "annotations": {names.ANNOTATION_VERSION: ctx.version_label},
        },
        "spec": {
            "replicas": ctx.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": _int_or_percent(rolling.max_surge),
                    "maxUnavailable": _int_or_percent(rolling.max_unavailable),
                },
            },
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": ctx.labels(),
                    "annotations": {
                        names.ANNOTATION_VERSION: ctx.version_label,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": PRE_STOP_SECONDS + DRAIN_SECONDS + 5,
                    "securityContext": pod_security(),
                    **_scheduling(ctx),
                    "containers": [server_container(ctx)],
                    "volumes": volumes,
                },
            },
        },
    }


def _int_or_percent(value: str) -> int | str:
    return value if value.endswith("%") else int(value)


def service(ctx: ServingContext) -> Manifest:
    ports = [
        {
            "name": "http",
            "port": SERVICE_PORT,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            # Named grpc and marked h2c (cleartext HTTP/2) so meshes and gateways
            # route it as gRPC rather than HTTP/1.1.
            "name": "grpc",
            "port": GRPC_PORT,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    metadata = ctx.metadata(names.service(ctx.name))
    return pods.service(metadata, names.server_selector(ctx.name), ports, type="ClusterIP")


def admin_secret(ctx: ServingContext) -> Manifest:
    """The deployment's admin token, for its servers; the operator derives it again and
    never reads this back."""
    metadata = ctx.metadata(names.admin_secret(ctx.name))
    return pods.secret(metadata, {credentials.SECRET_KEY: ctx.admin_token})


def disruption_budget(ctx: ServingContext) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": ctx.metadata(names.disruption_budget(ctx.name)),
        "spec": {
            # maxUnavailable rather than minAvailable: a single replica can still be
            # drained (with a brief gap) instead of blocking node maintenance forever.
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.server_selector(ctx.name)},
            # A pod that never became ready must not block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def peers_service(ctx: ServingContext) -> Manifest:
    """Headless: its name resolves to every server pod, the peers feedback is forwarded to.

    Not-ready pods are included: a draining replica still takes feedback for what it
    answered."""
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    metadata = ctx.metadata(names.peers_service(ctx.name))
    return pods.service(
        metadata,
        names.server_selector(ctx.name),
        ports,
        clusterIP="None",
        publishNotReadyAddresses=True,
    )


def children(ctx: ServingContext) -> list[Manifest]:
    """The serving children, in creation order (the Services first, so DNS is ready; the
    token's Secret before the pods that mount it)."""
    budget, secret = disruption_budget(ctx), admin_secret(ctx)
    return [service(ctx), peers_service(ctx), budget, secret, deployment(ctx)]
