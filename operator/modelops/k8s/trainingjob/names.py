"""Deterministic names and labels of a TrainingJob's children.

Every child's name follows from the job's name (and the attempt), so a restarted
operator finds what it created and a second create of the same child is refused by
the API server (409) instead of making a duplicate.
"""

from __future__ import annotations

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
from modelops.k8s.controller.naming import label_value as label_value

KIND = "TrainingJob"
PLURAL = "trainingjobs"

LABEL_JOB = f"{DOMAIN}/trainingjob"
LABEL_ATTEMPT = f"{DOMAIN}/attempt"
LABEL_INDEX = f"{DOMAIN}/worker-index"

ANNOTATION_PROGRESS = f"{DOMAIN}/progress"
ANNOTATION_VERSION = f"{DOMAIN}/model-version"


def child_name(job: str, suffix: str) -> str:
    """`<job>-<suffix>`: a valid DNS-1035 label for every job name Kubernetes accepts, so
    the same function names Services, pods and config objects."""
    return naming.child_name(job, suffix, "tj")


def job_label(job: str) -> str:
    """The job's name as a label value (at most 63 characters)."""
    return label_value(job)


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


def auth_secret(job: str) -> str:
    return child_name(job, "ray-auth")


def network_policy(job: str) -> str:
    return child_name(job, "ray")


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
    return naming.owner_reference(KIND, job, uid)
