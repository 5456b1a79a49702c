"""Deterministic names and labels of a TrainingJob's children.

Every child's name follows from the job's name (and the attempt), so a restarted
operator finds what it created and a second create of the same child is refused by
the API server (409) instead of making a duplicate.
"""

from __future__ import annotations

import hashlib
import re

from modelops.api.base import API_VERSION

KIND = "TrainingJob"
PLURAL = "trainingjobs"
DOMAIN = "modelops.dev"

LABEL_JOB = f"{DOMAIN}/trainingjob"
LABEL_ROLE = f"{DOMAIN}/role"
LABEL_ATTEMPT = f"{DOMAIN}/attempt"
LABEL_INDEX = f"{DOMAIN}/worker-index"
LABEL_MODEL = f"{DOMAIN}/model"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "modelops"

ANNOTATION_PROGRESS = f"{DOMAIN}/progress"
ANNOTATION_VERSION = f"{DOMAIN}/model-version"

# DNS-1035 labels (Services need them) are at most 63 characters and start with a letter.
_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]")


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def child_name(job: str, suffix: str) -> str:
    """`<job>-<suffix>`, shortened with a hash of the job name when it would not fit.

    The result is a valid DNS-1035 label for every job name Kubernetes accepts, so the
    same function names Services, pods and config objects.
    """
    base = _NOT_LABEL.sub("-", job)
    if not base[:1].isalpha():
        base = f"tj-{base}"
    name = f"{base}-{suffix}"
    if base == job and len(name) <= _MAX:
        return name
    # Sanitised or too long: the digest keeps `a.b` and `a-b` (or two long names) apart.
    keep = _MAX - len(suffix) - 10
    return f"{base[:keep].rstrip('-')}-{_digest(job)}-{suffix}"


def job_label(job: str) -> str:
    """The job's name as a label value (at most 63 characters)."""
    if len(job) <= _MAX:
        return job
    return f"{job[: _MAX - 9].rstrip('.-')}-{_digest(job)}"


def head_service(job: str) -> str:
    return child_name(job, "head")


def head_pod(job: str, attempt: int) -> str:
    return child_name(job, f"{attempt}-head")


def worker_pod(job: str, attempt: int, index: int) -> str:
    return child_name(job, f"{attempt}-worker-{index}")


def spec_config_map(job: str, attempt: int) -> str:
    return child_name(job, f"{attempt}-spec")


def service_account(job: str) -> str:
    return child_name(job, "driver")


def versions_config_map(model: str) -> str:
    # Model names are DNS-1123 labels of at most 63 characters; the prefix still fits 253.
    return f"modelops-versions-{model}"


def job_labels(job: str, model: str) -> dict[str, str]:
    """Labels on every child: the selector of the job's children."""
    return {
        LABEL_NAME: "modelops-training",
        LABEL_INSTANCE: job_label(job),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB: job_label(job),
        LABEL_MODEL: model,
    }


def selector(job: str) -> str:
    """A label selector matching the job's children."""
    return f"{LABEL_JOB}={job_label(job)},{LABEL_MANAGED_BY}={MANAGED_BY}"


def owner_reference(job: str, uid: str) -> dict[str, object]:
    """Children are owned by the job: the garbage collector removes them after it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
