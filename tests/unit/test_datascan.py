"""The reduced data report of an IncrementalUpdate, its wire form, and the scan Job."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.k8s.incrementalupdate import datascans
from modelops.lifecycle import datascan
from tests.unit.test_incrementalupdate_builders import _ctx

URI = "file:///data/digits/train"


def _manifest(*shards: tuple[str, int, str, int], columns: list[str] | None = None) -> SnapshotManifest:
    return SnapshotManifest(
        uri=URI,
        format="parquet",
        shards=[ShardInfo(path=p, size=s, sha256=h, rows=r) for p, s, h, r in shards],
        columns=columns if columns is not None else ["x", "target"],
    )


def test_a_scan_counts_new_changed_and_deleted_shards_against_the_baseline() -> None:
    baseline = _manifest(("a.parquet", 10, "h1", 5), ("b.parquet", 10, "h2", 5), ("c.parquet", 9, "h3", 4))
    now = _manifest(("a.parquet", 10, "h1", 5), ("b.parquet", 12, "h9", 6), ("d.parquet", 8, "h4", 3))
    read: list[str] = []

    def columns_of(path: str) -> list[str]:
        read.append(path)
        return ["x", "target"]

    result = datascan.scan(now, baseline, URI, columns_of)
    assert result.shards == 3 and result.rows == 14
    assert (result.delta.new_shards, result.delta.changed_shards, result.delta.deleted_shards) == (1, 1, 1)
    assert result.delta.new_rows == 9
    assert result.schema_problem is None
    assert sorted(read) == ["b.parquet", "d.parquet"]  # only new and changed shards are read
    assert result.digest.startswith("sha256:")


def test_the_first_shard_with_other_columns_is_the_problem_and_reading_stops() -> None:
    baseline = _manifest(("a.parquet", 10, "h1", 5))
    now = _manifest(("a.parquet", 10, "h1", 5), ("b.parquet", 1, "x", 1), ("c.parquet", 1, "y", 1))
    read: list[str] = []

    def columns_of(path: str) -> list[str]:
        read.append(path)
        return ["x", "label"]

    result = datascan.scan(now, baseline, URI, columns_of)
    assert result.schema_problem is not None
    assert "b.parquet" in result.schema_problem and "missing column(s) target" in result.schema_problem
    assert read == ["b.parquet"]


def test_an_unreadable_new_shard_is_a_problem_not_a_crash() -> None:
    def columns_of(path: str) -> list[str]:
        raise OSError("truncated footer")

    result = datascan.scan(_manifest(("a.parquet", 1, "h", 1)), None, URI, columns_of)
    assert result.schema_problem == "shard a.parquet cannot be read: OSError: truncated footer"


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z]{1,12}\.parquet", fullmatch=True),
            st.integers(0, 10**9),
            st.text("0123456789abcdef", min_size=64, max_size=64),
            st.integers(0, 10**7),
        ),
        unique_by=lambda t: t[0],
        max_size=200,
    ),
    st.text(max_size=5000),
)
def test_a_report_fits_a_termination_message_and_reads_back(
    shards: list[tuple[str, int, str, int]], problem_text: str
) -> None:
    listing = _manifest(*shards)

    def columns_of(path: str) -> list[str]:
        raise ValueError(problem_text)

    result = datascan.scan(listing, None, URI, columns_of)
    text = datascan.encode(result)
    assert len(text.encode()) <= datascan.MESSAGE_LIMIT
    parsed = datascan.parse(text)
    assert parsed is not None and parsed.scan == result
    failure = datascan.encode_failure(problem_text)
    assert len(failure) <= datascan.MESSAGE_LIMIT
    back = datascan.parse(failure)
    assert back is not None and back.error == problem_text[: datascan.PROBLEM_LIMIT]


def test_anything_else_in_a_message_is_not_a_report() -> None:
    for message in (None, "", "Traceback (most recent call last)", "[]", '{"scan": {"rows": -1}}', '{"x": 1}'):
        assert datascan.parse(message) is None, message


# -- the scan Job ------------------------------------------------------------------------------


def test_the_scan_job_runs_the_scan_command_in_the_update_namespace_under_restricted() -> None:
    ctx = _ctx(pvc="store")
    job = datascans.scan_job(ctx, 3)
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["ownerReferences"][0]["uid"] == ctx.uid
    assert job["metadata"]["annotations"][datascans.ANNOTATION_BASELINE] == "3"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    command = container["command"]
    assert command[:4] == ["python", "-m", "modelops_runtime", "scan"]
    assert command[command.index("--baseline") + 1] == "3"
    assert command[command.index("--data") + 1] == ctx.recipe.data.uri
    assert command[command.index("--cache") + 1] == f"{ctx.store.rstrip('/')}/{ctx.model}/.scan-digits.json"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    store = next(v for v in pod["volumes"] if v["name"] == "store")
    assert store["persistentVolumeClaim"]["claimName"] == "store"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert not mounts["store"].get("readOnly")  # the fingerprint cache is written there
    assert container["resources"]["limits"]["memory"] == "1Gi"
    without = datascans.scan_job(ctx, None)
    assert "--baseline" not in without["spec"]["template"]["spec"]["containers"][0]["command"]


def _pod(phase: str, message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if message is not None:
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "message": message}}
    return {
        "metadata": {"name": "digits-scan-abcde"},
        "status": {"phase": phase, "containerStatuses": [{"name": "scan", "state": state}]},
    }


def test_the_scan_outcome_is_read_from_the_finished_pod() -> None:
    listing = _manifest(("a.parquet", 1, "h", 2))
    result = datascan.scan(listing, None, URI, lambda path: ["x", "target"])
    running: dict[str, Any] = {"status": {"active": 1}}
    assert datascans.scan_outcome(running, [_pod("Running")]) is None
    done = datascans.scan_outcome({"status": {"succeeded": 1}}, [_pod("Succeeded", datascan.encode(result))])
    assert done is not None and done.scan == result
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    said = datascans.scan_outcome(failed_job, [_pod("Failed", datascan.encode_failure("listing x: FileNotFoundError: gone"))])
    assert said is not None and said.error == "listing x: FileNotFoundError: gone"
    crashed = datascans.scan_outcome(failed_job, [_pod("Failed", "Killed")])
    assert crashed is not None and crashed.error is not None
    assert "BackoffLimitExceeded" in crashed.error and "Killed" in crashed.error
    deadline = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    gone = datascans.scan_outcome(deadline, [])
    assert gone is not None and gone.error is not None and "DeadlineExceeded" in gone.error
    assert json.loads(datascan.encode(result))["scan"]["shards"] == 1
