"""From pod objects to the `PodView`s the lifecycle decisions read (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelops.k8s.trainingjob import names
from modelops.lifecycle.training import PodView, Role

MAIN_CONTAINERS = frozenset({"ray-head", "ray-worker"})


@dataclass(frozen=True)
class OwnedPod:
    """A pod of some TrainingJob: the owner's uid tells jobs of the same name apart."""

    owner_uid: str | None
    view: PodView


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _owner_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == names.KIND and ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def _ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The main container's termination record (empty while it runs)."""
    for container in status.get("containerStatuses") or ():
        if container.get("name") in MAIN_CONTAINERS:
            state = container.get("state") or {}
            terminated = state.get("terminated")
            if isinstance(terminated, Mapping):
                return terminated
    return {}


def pod_view(pod: Mapping[str, Any]) -> OwnedPod | None:
    """The view of a pod labelled as a TrainingJob's, or None for anything else."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        role = Role(labels.get(names.LABEL_ROLE, ""))
    except ValueError:
        return None
    if names.LABEL_JOB not in labels:
        return None
    status = pod.get("status") or {}
    terminated = _terminated(status)
    exit_code = terminated.get("exitCode")
    view = PodView(
        name=str(meta.get("name", "")),
        role=role,
        attempt=_int(labels.get(names.LABEL_ATTEMPT)),
        index=_int(labels.get(names.LABEL_INDEX)),
        phase=str(status.get("phase") or "Pending"),
        ready=_ready(status),
        deleting=meta.get("deletionTimestamp") is not None,
        progress=(meta.get("annotations") or {}).get(names.ANNOTATION_PROGRESS),
        message=terminated.get("message") or status.get("message"),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=terminated.get("reason") or status.get("reason"),
    )
    return OwnedPod(owner_uid=_owner_uid(meta), view=view)
