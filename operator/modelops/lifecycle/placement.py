"""Where a TrainingJob's training loop runs when nothing else decides it: a pure rule.

A job needs Ray Train when it asks for several workers (or a range of them) or a search;
one worker without a search runs the same loop in the driver's own process, with the
same checkpoints, resume and progress, without paying for Ray's start. On a cluster the
operator's pods name a Ray cluster and the job always runs there.
"""

from __future__ import annotations

from modelops.api.training import TrainingJobSpec


def needs_ray(spec: TrainingJobSpec) -> bool:
    resources = spec.resources
    return spec.search is not None or resources.workers > 1 or (resources.max_workers or 1) > 1
