"""Small rules of a TrainingJob: the gang, the back-off, where versions go, the TTL."""

from __future__ import annotations

from datetime import datetime, timedelta

from modelops.api.training import Attempt, TrainingJobSpec, TrainingJobStatus
from modelops.lifecycle.training_pods import PodView


def gang_size(spec: TrainingJobSpec) -> int:
    """Workers that must be ready before training starts (minWorkers of an elastic range)."""
    resources = spec.resources
    return resources.min_workers or resources.workers


def retry_delay(failures: int, base: float, limit: float) -> float:
    """Exponential back-off before attempt `failures` (1 for the first retry), capped."""
    if failures <= 0:
        return 0.0
    return float(min(limit, base * 2 ** (failures - 1)))


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def version_uri(spec: TrainingJobSpec, version: int) -> str:
    return join_uri(spec.output.store_uri, spec.output.model_name, f"v{version}")


def checkpoint_uri(spec: TrainingJobSpec, job_id: str, epoch: int) -> str:
    """The runtime's checkpoint folder of an epoch (see modelops_runtime.train.checkpoint)."""
    return join_uri(
        spec.output.store_uri, spec.output.model_name, "checkpoints", job_id, f"epoch-{epoch}"
    )


def headline_metric(spec: TrainingJobSpec, metrics: dict[str, float]) -> str | None:
    """The metric shown by `kubectl get tj`: the one the recipe optimises, when present."""
    preferred = [
        spec.search.metric if spec.search else None,
        spec.training.early_stopping.metric if spec.training.early_stopping else None,
        "val_accuracy",
        "val_loss",
    ]
    for name in [p for p in preferred if p] + sorted(metrics):
        if name in metrics:
            return f"{name}={metrics[name]:.4g}"
    return None


def ttl_deadline(spec: TrainingJobSpec, status: TrainingJobStatus) -> datetime | None:
    if spec.ttl_seconds_after_finished is None or status.completion_time is None:
        return None
    return status.completion_time + timedelta(seconds=spec.ttl_seconds_after_finished)


def current_attempt(status: TrainingJobStatus, pods: tuple[PodView, ...]) -> int:
    """The attempt in progress: the newest one in status or among the pods."""
    newest_pod = max((pod.attempt for pod in pods), default=0)
    return max(len(status.attempts) - 1, newest_pod, 0)


def failed_attempts(status: TrainingJobStatus) -> int:
    return sum(1 for attempt in status.attempts if attempt.result == "Failed")


def fill_attempts(status: TrainingJobStatus, index: int, now: datetime) -> None:
    """Make status.attempts reach `index`; gaps (a lost status write) count as failed."""
    while len(status.attempts) <= index:
        position = len(status.attempts)
        if position < index:
            status.attempts.append(
                Attempt(
                    index=position,
                    result="Failed",
                    finished_at=now,
                    reason="superseded by a newer attempt (status was lost)",
                )
            )
        else:
            status.attempts.append(Attempt(index=position, started_at=now))
