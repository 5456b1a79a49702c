"""The restricted Pod Security Standard, as every pod the operator creates wears it."""

from __future__ import annotations

from typing import Any

# The workload image's user (trainer_image/Dockerfile); never root.
RUNTIME_UID = 10001


def container_security() -> dict[str, Any]:
    """A container's context under the restricted standard, with a read-only root."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    """The pod's context: non-root user and group, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
