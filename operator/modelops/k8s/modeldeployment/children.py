"""API calls of the ModelDeployment controller, in one place (synchronous; run on a pool).

Children are written with server-side apply: the builders' dicts are the whole
intent, applying the same dict twice changes nothing, and fields owned by others
(a `kubectl annotate`, defaults) are left alone. An applier remembers what it last
applied and skips identical writes, re-applying now and then to undo drift.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from modelops.api.base import GROUP, VERSION
from modelops.k8s.controller.status import StatusConflict
from modelops.k8s.kube import ApiError, Kube, custom_path, namespaced_path
from modelops.k8s.modeldeployment import names

Manifest = dict[str, Any]

APPLY_PATCH = "application/apply-patch+yaml"
RESYNC_SECONDS = 60.0

_GROUPS = {
    "Deployment": ("apps", "v1", "deployments"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "Job": ("batch", "v1", "jobs"),
}


def path_of(kind: str, namespace: str, name: str | None = None) -> str:
    if kind in _GROUPS:
        group, version, plural = _GROUPS[kind]
        return custom_path(group, version, plural, namespace, name)
    return namespaced_path(kind, namespace, name)


def md_path(namespace: str, name: str) -> str:
    return custom_path(GROUP, VERSION, names.PLURAL, namespace, name)


def apply(kube: Kube, manifest: Manifest) -> Manifest:
    meta = manifest["metadata"]
    path = path_of(manifest["kind"], meta["namespace"], meta["name"])
    return kube.request(
        "PATCH", path, manifest, query=[("force", "true")], content_type=APPLY_PATCH
    )


class Applier:
    """Applies one ModelDeployment's children, skipping writes that would change nothing."""

    def __init__(self, kube: Kube, resync_seconds: float = RESYNC_SECONDS) -> None:
        self._kube = kube
        self._resync = resync_seconds
        self._applied: dict[str, tuple[str, float]] = {}

    def apply(self, manifest: Manifest) -> bool:
        """Apply when changed (or due for a resync); True when a write was made."""
        key = f"{manifest['kind']}/{manifest['metadata']['name']}"
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        last = self._applied.get(key)
        if last is not None and last[0] == digest and now - last[1] < self._resync:
            return False
        apply(self._kube, manifest)
        self._applied[key] = (digest, now)
        return True

    def forget(self) -> None:
        self._applied.clear()


def create_if_absent(kube: Kube, manifest: Manifest) -> bool:
    """Create; False when it already exists (its deterministic name says it is ours)."""
    path = path_of(manifest["kind"], manifest["metadata"]["namespace"])
    try:
        kube.request("POST", path, manifest)
    except ApiError as error:
        if error.conflict:
            return False
        raise
    return True


def trained_versions(kube: Kube, namespace: str, model: str) -> set[int]:
    """Versions of `model` produced by Succeeded TrainingJobs in the namespace."""
    items = kube.list(custom_path(GROUP, VERSION, "trainingjobs", namespace))
    found = set()
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        produced = status.get("modelVersion") or {}
        if (spec.get("output") or {}).get("modelName") != model:
            continue
        if status.get("phase") == "Succeeded" and produced.get("version"):
            found.add(int(produced["version"]))
    return found


def write_scale(
    kube: Kube, namespace: str, name: str, replicas: int, resource_version: str | None
) -> str:
    """Through the scale subresource, as kubectl scale, an HPA or KEDA would.

    Conditioned on the resourceVersion the decision was made from (`StatusConflict` when
    the object changed since); returns the object's new resourceVersion.
    """
    body: Manifest = {"spec": {"replicas": replicas}}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        scaled = kube.merge_patch(names.scale_path(namespace, name), body)
    except ApiError as error:
        if error.conflict:
            raise StatusConflict(str(error)) from error
        raise
    return str((scaled.get("metadata") or {}).get("resourceVersion") or resource_version)


def get_or_none(kube: Kube, path: str) -> Manifest | None:
    try:
        return kube.get(path)
    except ApiError as error:
        if error.not_found:
            return None
        raise
