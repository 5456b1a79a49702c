"""Pod parts every resource's children share: the operator's pod settings, the store, its
credentials, scheduling, the shape of a run-to-completion Job pod, a Secret, and a Service
in front of pods."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from modelops.api.tenancy import StoreLayout, store_root
from modelops.k8s.security import pod_security

Manifest = dict[str, Any]

STORE_MOUNT = "/var/lib/modelops"
STORE_SECRET = "modelops-store-credentials"
TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class PodSettings:
    """Operator-wide settings every resource's pods take (from OperatorConfig)."""

    image: str
    store_volume_claim: str | None = None
    store_layout: StoreLayout = StoreLayout.NAMESPACED

    def store_root(self, uri: str, namespace: str) -> str:
        """Where a namespace's models live under the store its spec names."""
        return store_root(uri, namespace, self.store_layout)


class Placement(Protocol):
    """Where a spec's pods may run (the `resources` of a TrainingJob or ModelDeployment)."""

    @property
    def node_selector(self) -> Mapping[str, str]: ...

    @property
    def tolerations(self) -> Sequence[Any]: ...

    @property
    def priority_class_name(self) -> str | None: ...


def scheduling(resources: Placement) -> Manifest:
    """nodeSelector, tolerations and priorityClassName, each only when set."""
    out: Manifest = {}
    if resources.node_selector:
        out["nodeSelector"] = dict(resources.node_selector)
    if resources.tolerations:
        out["tolerations"] = [t.to_dict() for t in resources.tolerations]
    if resources.priority_class_name:
        out["priorityClassName"] = resources.priority_class_name
    return out


def env_from() -> list[Manifest]:
    # s3:// stores read credentials and the endpoint (AWS_*) from this Secret when present.
    return [{"secretRef": {"name": STORE_SECRET, "optional": True}}]


def tmp_and_store(claim: str | None, *, writable: bool) -> tuple[list[Manifest], list[Manifest]]:
    """A writable /tmp under the read-only root, and the store's claim when there is one."""
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]
    if claim:
        volumes.append(
            {
                "name": "store",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable},
            }
        )
        mounts.append({"name": "store", "mountPath": STORE_MOUNT, "readOnly": not writable})
    return volumes, mounts


def job_pod(containers: list[Manifest], volumes: list[Manifest], placement: Manifest) -> Manifest:
    """The spec of a Job's pod: runs once, no API token, no service links, restricted."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        **placement,
        "containers": containers,
        "volumes": volumes,
    }


def metadata(name: str, namespace: str, labels: dict[str, str], owner: Manifest) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner],
    }


def secret(metadata: Manifest, data: Mapping[str, str], *, immutable: bool = False) -> Manifest:
    """An Opaque Secret holding `data` (plain text, encoded here)."""
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }
    if immutable:
        manifest["immutable"] = True
    return manifest


def service(
    metadata: Manifest, selector: Mapping[str, str], ports: list[Manifest], **spec: Any
) -> Manifest:
    """A Service in front of the pods `selector` picks; `spec` adds its type or addressing."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {**spec, "selector": dict(selector), "ports": ports},
    }
