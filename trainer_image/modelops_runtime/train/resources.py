"""Kubernetes resource quantities, as Ray and torch need them."""

from __future__ import annotations

from modelops.api.quantity import quantity as quantity
from modelops.api.training import WorkerResources


def threads_per_worker(resources: WorkerResources) -> int:
    """Torch threads of a worker: its whole CPUs, at least one."""
    return max(1, int(quantity(resources.cpus_per_worker)))
