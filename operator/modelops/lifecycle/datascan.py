"""What one look at an IncrementalUpdate's data found, reduced to what the update decides on.

The same reduction runs wherever the data is read: in the operator's process (local mode,
or an operator that can reach the store) or in a scan pod in the tenant's namespace, with
the tenant's access (`python -m modelops_runtime scan`), which reports it as its
termination message. The report is small whatever the dataset's size: counts, a digest and
at most one schema problem, never the listing itself, so it fits the kubelet's 4 KiB and
nothing of the data's layout beyond those counts reaches the update's status.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelops.api.artifact import SnapshotManifest
from modelops.api.update import DataDelta
from modelops.lifecycle.delta import compute_delta, schema_problem
from modelops.lifecycle.training_report import snapshot_summary

# The kubelet keeps this many bytes of a termination message; a report is cut to fit.
MESSAGE_LIMIT = 4096
PROBLEM_LIMIT = 1024


class DataScan(BaseModel):
    """The dataset now, against the snapshot the serving version was trained on."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    shards: int = Field(ge=0)
    rows: int = Field(ge=0)
    digest: str = Field(max_length=128)
    delta: DataDelta
    # The first new or changed shard whose columns differ from the trained ones, if any.
    schema_problem: str | None = Field(default=None, max_length=PROBLEM_LIMIT)


def scan(
    listing: SnapshotManifest,
    baseline: SnapshotManifest | None,
    uri: str,
    columns_of: Callable[[str], list[str]],
) -> DataScan:
    """Reduce a listing against its baseline; `columns_of(path)` reads one shard's columns.

    Only new and changed shards are read, and only until the first that differs: a shard
    that cannot be read is a problem of the same kind (the run would fail on it).
    """
    delta = compute_delta(baseline, listing)
    expected = baseline.columns if baseline is not None and baseline.columns else listing.columns
    problem = None
    for shard in delta.fresh:
        try:
            found = columns_of(shard.path)
        except Exception as error:  # unreadable: reported, the run is not started on it
            problem = f"shard {shard.path} cannot be read: {type(error).__name__}: {error}"
        else:
            problem = schema_problem(expected, found, shard.path)
        if problem is not None:
            break
    return DataScan(
        shards=len(listing.shards),
        rows=listing.rows,
        digest=snapshot_summary(listing, uri).digest,
        delta=DataDelta(
            new_shards=len(delta.new),
            changed_shards=len(delta.changed),
            deleted_shards=len(delta.deleted),
            new_rows=delta.fresh_rows,
        ),
        schema_problem=None if problem is None else problem[:PROBLEM_LIMIT],
    )


def encode(result: DataScan) -> str:
    return json.dumps({"scan": result.model_dump(mode="json", by_alias=True)}, sort_keys=True)


def encode_failure(message: str) -> str:
    """A scan that could not list the data says why, in as much as the message holds."""
    text = json.dumps({"error": message[:PROBLEM_LIMIT]})
    return text[:MESSAGE_LIMIT]


class ScanOutcome(BaseModel):
    """A parsed report: the scan, or the reason there is none."""

    model_config = ConfigDict(frozen=True)

    scan: DataScan | None = None
    error: str | None = None


def parse(message: str | None) -> ScanOutcome | None:
    """A scan pod's termination message; None when absent or not a report."""
    if not message:
        return None
    try:
        loaded = json.loads(message)
    except ValueError:
        return None
    if not isinstance(loaded, dict):
        return None
    try:
        if isinstance(loaded.get("scan"), dict):
            return ScanOutcome(scan=DataScan.model_validate(loaded["scan"]))
        if isinstance(loaded.get("error"), str):
            return ScanOutcome(error=loaded["error"][:PROBLEM_LIMIT])
    except ValidationError:
        return None
    return None
