"""Deterministic names and labels of an IncrementalUpdate's children.

Run `n` of update `u` is the TrainingJob `u-run-n` and, once it has produced a
candidate, the evaluation Job `u-run-n-eval`: both follow from the update's name and
the run's number (kept in status), so a restarted operator finds what it created and
a repeated create is refused (409) instead of making a duplicate.
"""

from __future__ import annotations

import hashlib
import re

from modelops.api.base import API_VERSION
from modelops.lifecycle.update import run_name

KIND = "IncrementalUpdate"
PLURAL = "incrementalupdates"
DOMAIN = "modelops.dev"

LABEL_UPDATE = f"{DOMAIN}/update"
LABEL_MODEL = f"{DOMAIN}/model"
LABEL_ROLE = f"{DOMAIN}/role"
LABEL_RUN = f"{DOMAIN}/update-run"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "modelops"
ROLE_EVALUATION = "evaluation"

ANNOTATION_CANDIDATE = f"{DOMAIN}/candidate-version"
ANNOTATION_CURRENT = f"{DOMAIN}/current-version"

_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]")


def _digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters, digest-shortened when longer)."""
    if len(name) <= _MAX:
        return name
    return f"{name[: _MAX - 9].rstrip('.-')}-{_digest(name)}"


def child_name(base_name: str, suffix: str) -> str:
    """`<base>-<suffix>` as a DNS-1035 label, shortened with a digest when it would not fit."""
    base = _NOT_LABEL.sub("-", base_name)
    if not base[:1].isalpha():
        base = f"iu-{base}"
    name = f"{base}-{suffix}"
    if base == base_name and len(name) <= _MAX:
        return name
    keep = _MAX - len(suffix) - 10
    return f"{base[:keep].rstrip('-')}-{_digest(base_name)}-{suffix}"


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
        LABEL_NAME: "modelops-evaluation",
        LABEL_INSTANCE: label_value(update),
        LABEL_COMPONENT: ROLE_EVALUATION,
        LABEL_MANAGED_BY: MANAGED_BY,
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
    """Children are owned by the update: the garbage collector removes them after it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": update,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
