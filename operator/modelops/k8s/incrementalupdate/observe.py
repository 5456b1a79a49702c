"""Reading what an IncrementalUpdate's children show, as the plan's terms (pure).

The run's TrainingJob becomes a `RunChild`, the evaluation Job and its pods an
`Evaluation`; `serving_version` is the newest promoted version of the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelops.api.update import IncrementalUpdateStatus
from modelops.k8s.incrementalupdate import builders
from modelops.lifecycle.promotion import promoted_by_training, promoted_by_update
from modelops.lifecycle.updateplan import Comparison, Evaluation, RunChild

Body = dict[str, Any]


def labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    return labels


def owned_by(body: Mapping[str, Any], uid: str) -> bool:
    refs = (body.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def serving_version(
    trainingjobs: list[Body], model: str, status: IncrementalUpdateStatus
) -> int | None:
    """The newest promoted version of `model`: what a ModelDeployment of `latest` serves.

    Promoted are the versions this update's gate let through, and those of Succeeded
    TrainingJobs of the model that are not update runs (their own completion promotes
    them, as the ModelDeployment controller counts them).
    """
    by_update = promoted_by_update({**status.to_dict(), "modelName": model})
    promoted = by_update[1] if by_update else set()
    for job in trainingjobs:
        spec, observed = job.get("spec") or {}, job.get("status") or {}
        by_training = promoted_by_training(labels(job), spec, observed)
        if by_training is not None and by_training[0] == model:
            promoted.add(by_training[1])
    return max(promoted, default=None)


def parse_comparison(message: str | None) -> Comparison | None:
    """The comparison in a termination message; None when absent or malformed."""
    if not message:
        return None
    try:
        raw = json.loads(message)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("candidate"), dict):
        return None

    def numbers(value: Any) -> dict[str, float]:
        return {
            str(k): float(v)
            for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }

    current = raw.get("current")
    return Comparison(
        candidate=numbers(raw["candidate"]),
        current=numbers(current) if isinstance(current, dict) else None,
    )


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        if container.get("name") == builders.EVALUATION_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated")
            if isinstance(terminated, Mapping):
                return terminated
    return {}


def _tail(text: str, limit: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= limit else f"...{text[-limit:]}"


def evaluation_state(job: Mapping[str, Any] | None, pods: list[Body]) -> Evaluation:
    """The outcome the evaluation Job and its pods show."""
    finished = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    for pod in finished:
        result = parse_comparison(_terminated(pod).get("message"))
        if result is not None:
            return Evaluation(result=result)
    if finished:
        name = (finished[0].get("metadata") or {}).get("name", "")
        message = _terminated(finished[0]).get("message") or ""
        return Evaluation(
            failure=f"pod {name} finished without a comparison: {_tail(message) or 'no message'}"
        )
    conditions = ((job or {}).get("status") or {}).get("conditions") or ()
    failed = next(
        (c for c in conditions if c.get("type") == "Failed" and c.get("status") == "True"), None
    )
    if failed is None:
        return Evaluation()
    detail = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
    crashed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if crashed:
        message = _terminated(crashed[-1]).get("message") or ""
        if message:
            detail = f"{detail}; {_tail(message)}"
    return Evaluation(failure=detail)


def run_child(body: Mapping[str, Any] | None, uid: str) -> RunChild | None:
    """The run's TrainingJob as the plan sees it; None when it does not exist."""
    if body is None:
        return None
    if not owned_by(body, uid):
        deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
        return RunChild(foreign=True, deleting=deleting)
    observed = body.get("status") or {}
    produced = observed.get("modelVersion") or {}
    return RunChild(
        phase=observed.get("phase"),
        message=observed.get("message"),
        version=int(produced["version"]) if produced.get("version") else None,
    )


def parse_status(raw: dict[str, Any]) -> IncrementalUpdateStatus:
    """The stored status; a status this version cannot read starts over from observation."""
    try:
        return IncrementalUpdateStatus.model_validate(raw)
    except ValidationError:
        return IncrementalUpdateStatus()
