"""Names, labels and ownership every resource's children share.

Every child's name follows from its owner's name (and a suffix), so a restarted operator
finds what it created and a second create of the same child is refused by the API
server (409) instead of making a duplicate.
"""

from __future__ import annotations

import hashlib
import re

from modelops.api.base import API_VERSION

DOMAIN = "modelops.dev"

LABEL_MODEL = f"{DOMAIN}/model"
LABEL_ROLE = f"{DOMAIN}/role"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "modelops"

# DNS-1035 labels (Services need them) are at most 63 characters and start with a letter.
MAX_LABEL = 63
_NOT_LABEL = re.compile(r"[^a-z0-9-]")


def digest(text: str, size: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def label_value(name: str) -> str:
    """A name as a label value (at most 63 characters, digest-shortened when longer)."""
    if len(name) <= MAX_LABEL:
        return name
    return f"{name[: MAX_LABEL - 9].rstrip('.-')}-{digest(name)}"


def child_name(owner: str, suffix: str, prefix: str) -> str:
    """`<owner>[-<suffix>]` as a DNS-1035 label, shortened with a digest when needed.

    `prefix` (the resource's short name) goes first when the owner's name does not start
    with a letter. A sanitised or too long name gets a digest of the owner's name, which
    keeps `a.b` and `a-b` (or two long names) apart.
    """
    base = _NOT_LABEL.sub("-", owner)
    if not base[:1].isalpha():
        base = f"{prefix}-{base}"
    name = f"{base}-{suffix}" if suffix else base
    if base == owner and len(name) <= MAX_LABEL:
        return name
    keep = MAX_LABEL - (len(suffix) + 1 if suffix else 0) - 9
    short = f"{base[:keep].rstrip('-')}-{digest(owner)}"
    return f"{short}-{suffix}" if suffix else short


def common_labels(app: str, instance: str, component: str | None = None) -> dict[str, str]:
    """The app.kubernetes.io labels of a child: which app, whose, what part; managed by us."""
    labels = {LABEL_NAME: app, LABEL_INSTANCE: label_value(instance)}
    if component is not None:
        labels[LABEL_COMPONENT] = component
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    return labels


def owner_reference(kind: str, name: str, uid: str) -> dict[str, object]:
    """Children are owned by their object: the garbage collector removes them after it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
