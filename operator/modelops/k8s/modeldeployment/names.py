"""Deterministic names and labels of a ModelDeployment's children.

The Service carries the ModelDeployment's own name, so clients call
`http://<md>.<namespace>.svc/v2/models/<model>/infer`; the other children add a
suffix. Names follow from the ModelDeployment's name alone, so a restarted
operator finds what it created.
"""

from __future__ import annotations

import hashlib
import re

from modelops.api.base import API_VERSION, GROUP, VERSION

KIND = "ModelDeployment"
PLURAL = "modeldeployments"
DOMAIN = "modelops.dev"

LABEL_DEPLOYMENT = f"{DOMAIN}/modeldeployment"
LABEL_MODEL = f"{DOMAIN}/model"
LABEL_ROLE = f"{DOMAIN}/role"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "modelops"
ROLE_SERVER = "server"
ROLE_BATCH = "batch-prediction"

ANNOTATION_VERSION = f"{DOMAIN}/model-version"
# Where the autoscaler and the rollout reach the servers, instead of the pods' IPs
# (see metrics_source.py and docs/modeldeployment.md).
ANNOTATION_METRICS_ENDPOINTS = f"{DOMAIN}/metrics-endpoints"
# Promote a candidate that waits with autoPromote: false (value: its version).
ANNOTATION_PROMOTE = f"{DOMAIN}/promote"

_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]")


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def child_name(md: str, suffix: str = "") -> str:
    """`<md>[-<suffix>]` as a DNS-1035 label, shortened with a digest when needed."""
    base = _NOT_LABEL.sub("-", md)
    if not base[:1].isalpha():
        base = f"md-{base}"
    name = f"{base}-{suffix}" if suffix else base
    if base == md and len(name) <= _MAX:
        return name
    keep = _MAX - (len(suffix) + 1 if suffix else 0) - 9
    short = f"{base[:keep].rstrip('-')}-{_digest(md)}"
    return f"{short}-{suffix}" if suffix else short


def label_value(md: str) -> str:
    if len(md) <= _MAX:
        return md
    return f"{md[: _MAX - 9].rstrip('.-')}-{_digest(md)}"


def service(md: str) -> str:
    return child_name(md)


def deployment(md: str) -> str:
    return child_name(md, "server")


def disruption_budget(md: str) -> str:
    return child_name(md, "server")


def batch_job(md: str, version: int, input_uri: str, output_uri: str) -> str:
    """One Job per (version, input, output): a new version or dataset runs a new Job."""
    return child_name(md, f"predict-v{version}-{_digest(f'{input_uri}|{output_uri}', 6)}")


def labels(md: str, model: str, role: str) -> dict[str, str]:
    return {
        LABEL_NAME: "modelops-serving",
        LABEL_INSTANCE: label_value(md),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: role,
        LABEL_DEPLOYMENT: label_value(md),
        LABEL_MODEL: model,
        LABEL_ROLE: role,
    }


def server_selector(md: str) -> dict[str, str]:
    """The inference pods: what the Service, the PDB and the scale selector match."""
    return {LABEL_DEPLOYMENT: label_value(md), LABEL_ROLE: ROLE_SERVER}


def selector_string(match: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))


def owner_reference(md: str, uid: str) -> dict[str, object]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def scale_path(namespace: str, md: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{md}/scale"
