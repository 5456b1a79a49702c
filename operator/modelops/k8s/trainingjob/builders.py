"""Pure builders of a TrainingJob's children: plain dicts, asserted as dicts in unit tests.

One attempt is one Ray cluster: a head pod (Ray head plus the driver that starts the
training once the gang of workers has joined) and the worker pods (Ray workers), behind
a headless head Service. Per job there is a ServiceAccount whose Role lets the driver
patch its own pod (the progress annotation) and nothing else, a Secret with the Ray
token every node of the job presents (Ray token authentication: GCS, client and
dashboard refuse anyone without it), and a NetworkPolicy that admits only the job's own
pods; per attempt there is an immutable ConfigMap with the spec the attempt runs.

The attempt as the builders see it is in `context`, its pods in `ray_pods`; both are
re-exported here.
"""

from __future__ import annotations

import yaml

from modelops.api.base import API_VERSION
from modelops.api.quantity import quantity as quantity
from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import STORE_MOUNT as STORE_MOUNT
from modelops.k8s.controller.pods import STORE_SECRET as STORE_SECRET
from modelops.k8s.trainingjob import names
from modelops.k8s.trainingjob.context import AUTH_TOKEN_KEY as AUTH_TOKEN_KEY
from modelops.k8s.trainingjob.context import CLIENT_PORT as CLIENT_PORT
from modelops.k8s.trainingjob.context import DASHBOARD_PORT as DASHBOARD_PORT
from modelops.k8s.trainingjob.context import GCS_PORT as GCS_PORT
from modelops.k8s.trainingjob.context import METRICS_PORT as METRICS_PORT
from modelops.k8s.trainingjob.context import PROGRESS_FILE as PROGRESS_FILE
from modelops.k8s.trainingjob.context import SPEC_DIR as SPEC_DIR
from modelops.k8s.trainingjob.context import SPEC_FILE as SPEC_FILE
from modelops.k8s.trainingjob.context import ClusterSettings as ClusterSettings
from modelops.k8s.trainingjob.context import JobContext as JobContext
from modelops.k8s.trainingjob.context import Manifest as Manifest
from modelops.k8s.trainingjob.ray_pods import GPU as GPU
from modelops.k8s.trainingjob.ray_pods import WAIT_FOR_HEAD as WAIT_FOR_HEAD
from modelops.k8s.trainingjob.ray_pods import driver_args as driver_args
from modelops.k8s.trainingjob.ray_pods import head_pod as head_pod
from modelops.k8s.trainingjob.ray_pods import worker_pod as worker_pod
from modelops.k8s.trainingjob.ray_pods import worker_start_args as worker_start_args
from modelops.lifecycle.training import Role

# --------------------------------------------------------------------------------------
# Per job: Service, ServiceAccount, Role, RoleBinding
# --------------------------------------------------------------------------------------


def head_service(ctx: JobContext) -> Manifest:
    """Headless: workers reach the head's GCS by DNS, even before the head reports ready."""
    head = {names.LABEL_JOB: names.job_label(ctx.name), names.LABEL_ROLE: Role.HEAD.value}
    ports = [
        {"name": "gcs", "port": GCS_PORT, "targetPort": GCS_PORT},
        {"name": "dashboard", "port": DASHBOARD_PORT, "targetPort": DASHBOARD_PORT},
        {"name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
        {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
    ]
    metadata = ctx.metadata(names.head_service(ctx.name))
    return pods.service(metadata, head, ports, clusterIP="None", publishNotReadyAddresses=True)


def auth_secret(ctx: JobContext, token: str) -> Manifest:
    """The job's Ray token; pods read it through `secretKeyRef`, the operator never again."""
    metadata = ctx.metadata(names.auth_secret(ctx.name))
    return pods.secret(metadata, {AUTH_TOKEN_KEY: token}, immutable=True)


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
