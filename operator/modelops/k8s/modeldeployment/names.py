"""Deterministic names and labels of a ModelDeployment's children.

The Service carries the ModelDeployment's own name, so clients call
`http://<md>.<namespace>.svc/v2/models/<model>/infer`; the other children add a
suffix. Names follow from the ModelDeployment's name alone, so a restarted
operator finds what it created.
"""

from __future__ import annotations

from modelops.api.base import GROUP, VERSION
from modelops.k8s.controller import naming

# The labels every resource's children carry, re-exported beside this resource's own.
from modelops.k8s.controller.naming import DOMAIN as DOMAIN
from modelops.k8s.controller.naming import LABEL_COMPONENT as LABEL_COMPONENT
from modelops.k8s.controller.naming import LABEL_INSTANCE as LABEL_INSTANCE
from modelops.k8s.controller.naming import LABEL_MANAGED_BY as LABEL_MANAGED_BY
from modelops.k8s.controller.naming import LABEL_MODEL as LABEL_MODEL
from modelops.k8s.controller.naming import LABEL_NAME as LABEL_NAME
from modelops.k8s.controller.naming import LABEL_ROLE as LABEL_ROLE
from modelops.k8s.controller.naming import MANAGED_BY as MANAGED_BY
from modelops.k8s.controller.naming import digest
from modelops.k8s.controller.naming import label_value as label_value

KIND = "ModelDeployment"
PLURAL = "modeldeployments"

LABEL_DEPLOYMENT = f"{DOMAIN}/modeldeployment"
ROLE_SERVER = "server"
ROLE_BATCH = "batch-prediction"

ANNOTATION_VERSION = f"{DOMAIN}/model-version"
# Where the autoscaler and the rollout reach the servers, instead of the pods' IPs
# (see metrics_source.py and docs/modeldeployment.md).
ANNOTATION_METRICS_ENDPOINTS = f"{DOMAIN}/metrics-endpoints"
# Promote a candidate that waits with autoPromote: false (value: its version).
ANNOTATION_PROMOTE = f"{DOMAIN}/promote"


def child_name(md: str, suffix: str = "") -> str:
    """`<md>[-<suffix>]` as a DNS-1035 label, shortened with a digest when needed."""
    return naming.child_name(md, suffix, "md")


def service(md: str) -> str:
    return child_name(md)


def peers_service(md: str) -> str:
    return child_name(md, "peers")


def deployment(md: str) -> str:
    return child_name(md, "server")


def disruption_budget(md: str) -> str:
    return child_name(md, "server")


def admin_secret(md: str) -> str:
    """The Secret with the deployment's own admin token (see credentials.py)."""
    return child_name(md, "admin")


def batch_job(md: str, version: int, input_uri: str, output_uri: str) -> str:
    """One Job per (version, input, output): a new version or dataset runs a new Job."""
    return child_name(md, f"predict-v{version}-{digest(f'{input_uri}|{output_uri}', 6)}")


def labels(md: str, model: str, role: str) -> dict[str, str]:
    return {
        **naming.common_labels("modelops-serving", md, role),
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
    return naming.owner_reference(KIND, md, uid)


def scale_path(namespace: str, md: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{md}/scale"
