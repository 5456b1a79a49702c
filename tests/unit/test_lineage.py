"""Run identity (spec and data digests) and how a version's origin reaches the status."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.api.training import TrainingJob, TrainingJobSpec, TrainingJobStatus, TrainingPhase
from modelops.lifecycle.lineage import Origin, describe, run_key, spec_digest
from modelops.lifecycle.training import Observed, PodView, Role, plan
from modelops.lifecycle.training_report import TrainingResult, VersionOrigin, parse_result
from modelops_runtime import driver
from tests.unit.manifests import training_job

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _spec(**changes: object) -> TrainingJobSpec:
    raw = training_job()["spec"]
    raw.update(changes)
    return TrainingJobSpec.model_validate(raw)


def test_the_spec_digest_covers_what_decides_the_weights() -> None:
    base = _spec()
    same = [
        _spec(resources={**base.resources.to_dict(), "workers": 7}),
        _spec(backoffLimit=base.backoff_limit + 3),
        _spec(ttlSecondsAfterFinished=5),
        # A default written out is the default left out.
        _spec(training={**base.training.to_dict(), "mixedPrecision": base.training.mixed_precision}),
    ]
    assert {spec_digest(s) for s in same} == {spec_digest(base)}
    training = base.training.to_dict()
    different = [
        _spec(training={**training, "seed": base.training.seed + 1}),
        _spec(training={**training, "epochs": base.training.epochs + 1}),
        _spec(data={**base.data.to_dict(), "validationSplit": 0.3}),
        _spec(model={**base.model.to_dict(), "hiddenLayers": [3]}),
    ]
    digests = {spec_digest(s) for s in different}
    assert len(digests) == len(different) and spec_digest(base) not in digests


def test_the_run_key_changes_with_job_spec_or_data() -> None:
    key = run_key("job", "spec", "data")
    assert key == run_key("job", "spec", "data")
    assert len({key, run_key("job2", "spec", "data"), run_key("job", "spec2", "data"), run_key("job", "spec", "data2")}) == 4


def test_the_status_says_how_the_version_came_about() -> None:
    result = TrainingResult(
        version=6,
        uri="file:///models/digits/v6",
        origin=VersionOrigin(how=Origin.REUSED, why="job uid-1 already published it"),
    )
    spec = _spec()
    observed = Observed(
        spec=spec,
        status=TrainingJobStatus(phase=TrainingPhase.RUNNING),
        generation=1,
        pods=(PodView("h", Role.HEAD, 0, 0, "Succeeded", False, message=result.encode()),),
        version=4,
        job_id="uid-1",
        now=T0,
    )
    status = plan(observed).status
    assert status.model_version is not None and status.model_version.version == 6
    # The URI comes from the spec's store (a pod's message cannot move a version elsewhere).
    uri = f"{spec.output.store_uri.rstrip('/')}/digits/v6"
    assert status.model_version.uri == uri
    assert status.message == f"model digits version 6 at {uri}, reused: job uid-1 already published it"
    assert describe("Trained", "no earlier run") == "newly trained: no earlier run"


def test_the_driver_reports_the_version_the_runtime_published(tmp_path: Path) -> None:
    job = TrainingJob.model_validate(training_job())
    job.spec.output.store_uri = (tmp_path / "models").as_uri()
    folder = tmp_path / "models" / job.spec.output.model_name / "v6"
    manifest = SnapshotManifest(uri="file:///data", format="parquet", shards=[ShardInfo(path="a.parquet", size=1, sha256="0" * 64, rows=10)])
    reported = {
        "version": 6,
        "uri": folder.as_uri(),
        "origin": {"how": "Trained", "why": "v5 went to another run"},
    }
    script = (
        "import json, pathlib\n"
        f"d = pathlib.Path({str(folder)!r}); d.mkdir(parents=True)\n"
        "(d / 'metrics.json').write_text(json.dumps({'val_loss': 0.2}))\n"
        f"(d / 'snapshot.json').write_text({manifest.model_dump_json()!r})\n"
        f"print('MODELOPS_PROGRESS ' + json.dumps({{'epoch': 2, 'checkpoint': 'file:///ck/epoch-2'}}))\n"
        f"print('MODELOPS_RESULT ' + json.dumps({reported!r}))\n"
    )
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(json.dumps(job.model_dump(mode="json", by_alias=True)))
    log = tmp_path / "termination-log"
    argv = ["--spec", str(spec_file), "--version", "5", "--job-id", "uid-9", "--progress-file", str(tmp_path / "p.json")]
    code = driver.main([*argv, "--no-ray", "--termination-log", str(log)], command=[sys.executable, "-c", script])
    assert code == 0
    result = parse_result(log.read_text())
    assert result is not None and (result.version, result.uri) == (6, folder.as_uri())
    assert result.metrics == {"val_loss": 0.2} and result.checkpoint == "file:///ck/epoch-2"
    assert result.origin == VersionOrigin(how="Trained", why="v5 went to another run")
    assert driver.reported_result(["MODELOPS_RESULT {", "x"]) is None
