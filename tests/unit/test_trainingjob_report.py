"""Driver ↔ operator messages, the driver's relay and result, and the pod observation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.api.training import TrainingJob
from modelops.k8s.trainingjob import builders, names
from modelops.k8s.trainingjob.observe import pod_view
from modelops.lifecycle.training import Role
from modelops.lifecycle.training_report import (
    TERMINATION_MESSAGE_LIMIT,
    TrainingResult,
    parse_progress,
    parse_result,
    snapshot_summary,
)
from modelops_runtime import driver
from tests.unit.manifests import training_job

# -- messages -----------------------------------------------------------------------------


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=40),
        st.floats(allow_nan=False, allow_infinity=False),
        max_size=400,
    )
)
def test_results_always_fit_the_termination_message(metrics: dict[str, float]) -> None:
    result = TrainingResult(version=3, uri="s3://bucket/models/m/v3", metrics=metrics)
    text = result.encode()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_result(text)
    assert parsed is not None and parsed.version == 3
    assert set(parsed.metrics) <= set(metrics)


def test_results_round_trip_and_junk_is_not_a_result() -> None:
    result = TrainingResult(
        version=2, uri="file:///m/v2", metrics={"val_loss": 0.25}, checkpoint="c"
    )
    assert parse_result(result.encode()) == result
    assert parse_result("Traceback (most recent call last): ...") is None
    assert parse_result(None) is None


def test_progress_accepts_the_runtime_document_and_its_extra_keys() -> None:
    doc = {
        "epoch": 2,
        "totalEpochs": 4,
        "percent": 50,
        "metrics": {"val_loss": 1.0},
        "jobId": "j",
        "phase": "training",
        "attempt": 1,
        "trials": [],
    }
    report = parse_progress(json.dumps(doc))
    assert report is not None
    assert report.progress.epoch == 2 and report.attempt == 1
    assert parse_progress('{"epoch": -1}') is None
    assert parse_progress("[]") is None


def test_snapshot_digest_depends_on_the_shards_only() -> None:
    shards = [
        ShardInfo(path=f"s{i}.parquet", size=10 * i, sha256=f"{i:064x}", rows=i) for i in range(3)
    ]
    a = snapshot_summary(SnapshotManifest(uri="file:///d", format="parquet", shards=shards), "u")
    b = snapshot_summary(
        SnapshotManifest(uri="file:///d", format="parquet", shards=list(reversed(shards))), "u"
    )
    assert a == b and a.shards == 3 and a.rows == 3
    changed = [*shards[:2], shards[2].model_copy(update={"sha256": "f" * 64})]
    c = snapshot_summary(SnapshotManifest(uri="file:///d", format="parquet", shards=changed), "u")
    assert c.digest != a.digest


# -- the driver ---------------------------------------------------------------------------


def test_relay_throttles_but_always_sends_the_last_document() -> None:
    sent: list[str] = []
    clock = [0.0]
    relay = driver.ProgressRelay(sent.append, interval=5.0, clock=lambda: clock[0])
    for epoch in range(1, 6):
        relay.offer({"epoch": epoch})
        clock[0] += 1.0
    assert [json.loads(s)["epoch"] for s in sent] == [1]
    relay.flush()
    assert [json.loads(s)["epoch"] for s in sent] == [1, 5]


def _job(tmp_path: Path) -> TrainingJob:
    manifest = training_job()
    manifest["spec"]["output"]["storeUri"] = f"file://{tmp_path}/models"
    return TrainingJob.model_validate(manifest)


def test_the_driver_relays_progress_and_writes_the_result(tmp_path: Path) -> None:
    """A real child process stands in for the runtime; its version folder is real too."""
    version_dir = tmp_path / "models" / "digits" / "v5"
    manifest = SnapshotManifest(
        uri="file:///data",
        format="parquet",
        shards=[ShardInfo(path="a.parquet", size=1, sha256="0" * 64, rows=10)],
    )
    progress = {"epoch": 30, "totalEpochs": 30, "metrics": {"val_loss": 0.2}}
    script = (
        "import json, pathlib, sys\n"
        f"d = pathlib.Path({str(version_dir)!r}); d.mkdir(parents=True)\n"
        "(d / 'metrics.json').write_text(json.dumps({'val_accuracy': 0.9, 'val_loss': 0.2}))\n"
        f"(d / 'snapshot.json').write_text({manifest.model_dump_json()!r})\n"
        f"print('epoch done'); print('MODELOPS_PROGRESS ' + json.dumps({progress!r}))\n"
    )
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(json.dumps(_job(tmp_path).model_dump(mode="json", by_alias=True)))
    log = tmp_path / "termination-log"
    code = driver.main(
        [
            "--spec",
            str(spec_file),
            "--version",
            "5",
            "--job-id",
            "uid-9",
            "--progress-file",
            str(tmp_path / "p.json"),
            "--no-ray",
            "--termination-log",
            str(log),
        ],
        command=[sys.executable, "-c", script],
    )
    assert code == 0
    result = parse_result(log.read_text())
    assert result is not None
    assert result.version == 5
    assert result.uri == f"file://{tmp_path}/models/digits/v5"
    assert result.metrics == {"val_accuracy": 0.9, "val_loss": 0.2}
    assert result.data_snapshot is not None and result.data_snapshot.rows == 10
    assert result.checkpoint == f"file://{tmp_path}/models/digits/checkpoints/uid-9/epoch-30"


def test_a_failed_training_leaves_its_output_tail(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(json.dumps(_job(tmp_path).model_dump(mode="json", by_alias=True)))
    log = tmp_path / "termination-log"
    code = driver.main(
        [
            "--spec",
            str(spec_file),
            "--version",
            "1",
            "--job-id",
            "u",
            "--progress-file",
            str(tmp_path / "p.json"),
            "--no-ray",
            "--termination-log",
            str(log),
        ],
        command=[
            sys.executable,
            "-c",
            "import sys; print('loading'); sys.exit('CUDA out of memory')",
        ],
    )
    assert code == 1
    text = log.read_text()
    assert text.startswith("training exited with code 1")
    assert text.rstrip().endswith("CUDA out of memory")
    assert parse_result(text) is None


def test_progress_lines_are_recognised() -> None:
    assert driver.parse_progress_line('MODELOPS_PROGRESS {"epoch": 1}') == {"epoch": 1}
    assert driver.parse_progress_line("MODELOPS_PROGRESS nope") is None
    assert driver.parse_progress_line('other {"epoch": 1}') is None


# -- observing pods -----------------------------------------------------------------------


def _head_pod() -> dict[str, object]:
    from modelops.api.training import TrainingJobSpec

    ctx = builders.JobContext(
        name="digits-mlp",
        namespace="ns",
        uid="uid-1",
        spec=TrainingJobSpec.model_validate(training_job()["spec"]),
        version=1,
        attempt=2,
        settings=builders.ClusterSettings(image="img"),
    )
    return builders.head_pod(ctx)


def test_a_built_pod_is_observed_with_its_role_attempt_and_owner() -> None:
    pod = _head_pod()
    owned = pod_view(pod)
    assert owned is not None
    assert owned.owner_uid == "uid-1"
    view = owned.view
    assert (view.role, view.attempt, view.phase, view.ready) == (Role.HEAD, 2, "Pending", False)


def test_termination_records_and_annotations_are_read() -> None:
    pod = _head_pod()
    pod["metadata"]["annotations"] = {names.ANNOTATION_PROGRESS: '{"epoch": 1}'}  # type: ignore[index]
    pod["status"] = {
        "phase": "Failed",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": "ray-head",
                "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "bad"}},
            }
        ],
    }
    owned = pod_view(pod)
    assert owned is not None
    view = owned.view
    assert (view.phase, view.exit_code, view.reason, view.message) == ("Failed", 3, "Error", "bad")
    assert view.progress == '{"epoch": 1}'
    assert view.failure() == "head pod digits-mlp-2-head failed: Error (exit code 3): bad"


def test_an_evicted_pod_reports_the_eviction() -> None:
    pod = _head_pod()
    pod["status"] = {"phase": "Failed", "reason": "Evicted", "message": "node low on memory"}
    owned = pod_view(pod)
    assert owned is not None
    assert owned.view.failure() == "head pod digits-mlp-2-head failed: Evicted: node low on memory"


def test_unrelated_pods_are_not_observed() -> None:
    assert pod_view({"metadata": {"name": "x", "labels": {"app": "web"}}}) is None


def test_the_wait_for_the_gang_has_a_deadline() -> None:
    """Finding 12: a worker that never joins fails the attempt instead of holding the GPUs."""
    now = [0.0]
    alive = [{"Alive": True}, {"Alive": True}, {"Alive": False}]  # head, one of two workers

    def sleep(seconds: float) -> None:
        now[0] += seconds

    try:
        driver.count_workers(2, lambda: alive, deadline=60, poll=2, clock=lambda: now[0], sleep=sleep)
    except driver.WorkersMissing as error:
        assert str(error) == "1/2 workers joined within 60s; giving up the attempt"
    else:
        raise AssertionError("waited past the deadline")
    assert 60 <= now[0] <= 62
    alive[2]["Alive"] = True
    driver.count_workers(2, lambda: alive, deadline=0, clock=lambda: now[0], sleep=sleep)
    assert driver.parse_args(["--spec", "s", "--version", "1", "--job-id", "j",
                              "--progress-file", "p"]).workers_timeout == driver.WORKERS_TIMEOUT
