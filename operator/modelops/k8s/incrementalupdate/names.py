"""Deterministic names and labels of an IncrementalUpdate's children.

Run `n` of update `u` is the TrainingJob `u-run-n` and, once it has produced a
candidate, the evaluation Job `u-run-n-eval`: both follow from the update's name and
the run's number (kept in status), so a restarted operator finds what it created and
a repeated create is refused (409) instead of making a duplicate.
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
from modelops.lifecycle.update import run_name

KIND = "IncrementalUpdate"
PLURAL = "incrementalupdates"

LABEL_UPDATE = f"{DOMAIN}/update"
LABEL_RUN = f"{DOMAIN}/update-run"
ROLE_EVALUATION = "evaluation"

ANNOTATION_CANDIDATE = f"{DOMAIN}/candidate-version"
ANNOTATION_CURRENT = f"{DOMAIN}/current-version"


def child_name(base_name: str, suffix: str) -> str:
    """`<base>-<suffix>` as a DNS-1035 label, shortened with a digest when it would not fit."""
    return naming.child_name(base_name, suffix, "iu")


def training_job(update: str, sequence: int) -> str:
    """The child TrainingJob of run `sequence` (TrainingJob names may be 253 long)."""
    return run_name(update, sequence)


def evaluation_job(update: str, sequence: int) -> str:
    """The evaluation Job of run `sequence`: a DNS-1035 label, as Job names must be."""
    return child_name(update, f"run-{sequence}-eval")


def run_labels(update: str, model: str) -> dict[str, str]:
    """Labels on the child TrainingJobs: `modelops.dev/update` keeps them out of `latest`."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_UPDATE: label_value(update),
        LABEL_MODEL: model,
    }


def evaluation_labels(update: str, model: str, run: str) -> dict[str, str]:
    return {
        **naming.common_labels("modelops-evaluation", update, ROLE_EVALUATION),
        LABEL_UPDATE: label_value(update),
        LABEL_MODEL: model,
        LABEL_ROLE: ROLE_EVALUATION,
        LABEL_RUN: label_value(run),
    }


def evaluation_selector(update: str) -> str:
    """The evaluation pods of every run of the update."""
    return (
        f"{LABEL_UPDATE}={label_value(update)},{LABEL_ROLE}={ROLE_EVALUATION},"
        f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    )


def runs_selector(update: str) -> str:
    """The child TrainingJobs of the update."""
    return f"{LABEL_UPDATE}={label_value(update)},{LABEL_MANAGED_BY}={MANAGED_BY}"


def owner_reference(update: str, uid: str) -> dict[str, object]:
    return naming.owner_reference(KIND, update, uid)
