"""What the training driver reports to the operator, and how both sides read it.

The driver runs in the head pod and has no channel to the operator but the pod itself:
- while training, it writes the runtime's progress document into the head pod's
  annotation `modelops.dev/progress` (JSON, camelCase, the `Progress` fields plus
  `attempt`, `jobId`, `phase` and optionally `checkpoint`);
- when it exits, it writes a `TrainingResult` as the container's termination message
  (`/dev/termination-log`, at most 4096 bytes), which the kubelet copies into the pod's
  `status.containerStatuses[].state.terminated.message`.
Both are plain pod fields, so the operator never execs into pods and tests can drive
them by patching a pod.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import DataSnapshot, Progress, TrialResult

# The kubelet keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096

_PROGRESS_FIELDS = frozenset(
    alias for name, field in Progress.model_fields.items() if (alias := field.alias or name)
)


# The training's exit code for errors in the input (missing columns, no shards): they
# recur on every attempt, so the job fails at once instead of retrying backoffLimit times.
INPUT_ERROR_EXIT_CODE = 4

class _Wire(BaseModel):
    # Lenient on purpose: the driver and the operator may be one release apart, and a newer
    # driver's extra keys must not make an older operator drop the report.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class VersionOrigin(_Wire):
    """How the version came about (a `lineage.Origin` value) and why."""

    how: str
    why: str


class TrainingResult(_Wire):
    """The head pod's termination message on success."""

    version: int = Field(ge=1)
    uri: str
    metrics: dict[str, float] = Field(default_factory=dict)
    data_snapshot: DataSnapshot | None = None
    parent_version: int | None = None
    checkpoint: str | None = None
    trials: list[TrialResult] = Field(default_factory=list)
    origin: VersionOrigin | None = None

    def encode(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """JSON that fits the termination message; trials, then metrics, are shed to fit."""
        result = self
        sheds: list[dict[str, Any]] = [
            {"trials": []},
            {"metrics": _first_metrics(self.metrics, 8)},
            {"metrics": {}},
        ]
        for shed in sheds:
            text = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))
            if len(text.encode()) <= limit:
                return text
            result = result.model_copy(update=shed)
        text = json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))
        if len(text.encode()) > limit:
            raise ValueError("the result does not fit the termination message")
        return text


def _first_metrics(metrics: dict[str, float], count: int) -> dict[str, float]:
    return {key: metrics[key] for key in sorted(metrics)[:count]}


def parse_result(message: str | None) -> TrainingResult | None:
    """The result in a termination message; None when it is absent or not a result."""
    if not message:
        return None
    try:
        return TrainingResult.model_validate_json(message)
    except ValidationError:
        return None


class ProgressReport(_Wire):
    """The progress annotation: the API's Progress plus the checkpoint it was saved to."""

    progress: Progress
    checkpoint: str | None = None
    attempt: int | None = None


def parse_progress(text: str | None) -> ProgressReport | None:
    """The progress annotation's content; None when it is absent or malformed."""
    if not text:
        return None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    shared = {key: value for key, value in raw.items() if key in _PROGRESS_FIELDS}
    try:
        progress = Progress.model_validate(shared)
    except ValidationError:
        return None
    checkpoint = raw.get("checkpoint")
    attempt = raw.get("attempt")
    return ProgressReport(
        progress=progress,
        checkpoint=checkpoint if isinstance(checkpoint, str) else None,
        attempt=attempt if isinstance(attempt, int) else None,
    )


def encode_progress(document: dict[str, Any]) -> str:
    """The annotation value for a runtime progress document (stable key order)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


DIGEST_PREFIX = "sha256:"


def canonical_digest(digest: str) -> str:
    """A data digest in the one format written: `sha256:<hex>` over the sorted shards.

    Stores written before it was the only one hold the bare hex of the same hash; it
    reads as the same digest, so their runs are not repeated on unchanged data.
    """
    if not digest or digest.startswith(DIGEST_PREFIX):
        return digest
    return f"{DIGEST_PREFIX}{digest}"


def snapshot_summary(manifest: SnapshotManifest, uri: str) -> DataSnapshot:
    """The status summary of a snapshot manifest; the digest identifies the exact shards."""
    hasher = hashlib.sha256()
    for shard in sorted(manifest.shards, key=lambda s: s.path):
        hasher.update(f"{shard.path}\0{shard.size}\0{shard.sha256}\n".encode())
    return DataSnapshot(
        uri=uri,
        shards=len(manifest.shards),
        rows=manifest.rows,
        digest=f"sha256:{hasher.hexdigest()}",
    )
