"""What decides a trained version, as digests: the scope of checkpoints and of reuse.

A run is identified by its job, the digest of the spec fields that decide the weights and
the digest of the data snapshot it trains on. Checkpoints live under that run, so only
the same run resumes them: a changed spec or new data starts fresh. A version records
the run that published it, so rerunning that run reports the version instead of
publishing a copy.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from modelops.api.training import TrainingJobSpec

# How the job is run, not what it computes: a retry with other resources, another
# backoff limit or TTL resumes the same checkpoints and may reuse the same version.
EXECUTION_FIELDS = frozenset({"resources", "backoff_limit", "ttl_seconds_after_finished"})


class Origin(StrEnum):
    """How a job's version came about."""

    TRAINED = "Trained"  # trained from the start by this run
    RESUMED = "Resumed"  # finished from a checkpoint of the same run
    REUSED = "Reused"  # already published by the same run; nothing trained


def spec_digest(spec: TrainingJobSpec) -> str:
    """A digest of the fields that decide the result; defaults count as unset, so a field
    added later with a default does not change the digest of an older spec."""
    decided = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude=set(EXECUTION_FIELDS))
    text = json.dumps(decided, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_key(job_id: str, spec: str, data: str) -> str:
    """The run's name among the job's checkpoints: job, spec digest and data digest."""
    return hashlib.sha256(f"{job_id}\0{spec}\0{data}".encode()).hexdigest()[:24]


_VERBS: dict[str, str] = {
    Origin.TRAINED: "newly trained",
    Origin.RESUMED: "resumed",
    Origin.REUSED: "reused",
}


def describe(origin: str, reason: str) -> str:
    """How a finished job's version came about and why, for its status message."""
    return f"{_VERBS.get(origin, origin)}: {reason}"
