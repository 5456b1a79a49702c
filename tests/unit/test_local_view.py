"""`modelops status` on a state folder written the way `modelops run` writes it.

The folder holds the quickstart's TrainingJob and ModelDeployment with the statuses a
finished run leaves, saved through the same StateStore and API models local mode uses.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelops.api.deployment import DeploymentPhase, LiveMetrics, ModelDeploymentStatus
from modelops.api.training import ModelVersionRef, TrainingJobStatus, TrainingPhase
from modelops.cli import main
from modelops.local import view
from modelops.local.runner import load_resources
from modelops.local.state import Heartbeat, StateStore
from modelops.local.training import main_metric

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def _finished_run(state_dir: Path, tmp_path: Path) -> StateStore:
    store = StateStore(state_dir)
    job, deployment = load_resources(
        [str(EXAMPLES / "trainingjob.yaml"), str(EXAMPLES / "modeldeployment.yaml")], tmp_path
    )
    metrics = {"accuracy": 0.9721, "loss": 0.1}
    trained = TrainingJobStatus(
        phase=TrainingPhase.SUCCEEDED,
        model_version=ModelVersionRef(name="digits", version=1, uri="file:///x", metrics=metrics),
        main_metric=main_metric(metrics),
    )
    serving = ModelDeploymentStatus(
        phase=DeploymentPhase.AVAILABLE,
        active_version=1,
        replicas=1,
        ready_replicas=1,
        desired_replicas=1,
        metrics=LiveMetrics(rps=0.0, p95_ms=None, updated_at=datetime.now(UTC)),
    )
    store.save_status("TrainingJob", job.metadata.name, job.spec.to_dict(), trained.to_dict())
    store.save_status(
        "ModelDeployment", deployment.metadata.name, deployment.spec.to_dict(), serving.to_dict()
    )
    return store


def _status(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["status", "--state", str(state_dir)]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def modelops_process() -> Iterator[int]:
    """A live process whose command line names modelops, as `modelops run`'s does."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "modelops", "run"]
    )
    yield process.pid
    process.kill()
    process.wait()


def test_a_metric_is_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _finished_run(tmp_path / "state", tmp_path)
    job = [line for line in _status(tmp_path / "state", capsys) if line.startswith("tj/")]
    assert len(job) == 1
    assert job[0].count("accuracy=") == 1, job[0]
    assert "accuracy=0.972" in job[0]


def test_a_stopped_run_shows_when_it_was_seen_and_no_live_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _finished_run(tmp_path / "state", tmp_path)
    seen = datetime.now(UTC) - timedelta(minutes=5)
    store.beat(Heartbeat(pid=1, seen=seen, stopped=True))
    lines = _status(tmp_path / "state", capsys)
    assert lines[0].startswith(
        f"modelops run stopped; last seen {seen.astimezone():%Y-%m-%d %H:%M:%S} (5 min ago)"
    )
    deployment = next(line for line in lines if line.startswith("md/digits"))
    for live in ("replicas=", "rps=", "p95="):
        assert live not in deployment, deployment


def test_a_killed_run_is_not_live(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _finished_run(tmp_path / "state", tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    store.beat(Heartbeat(pid=int(gone.stdout), seen=datetime.now(UTC)))
    lines = _status(tmp_path / "state", capsys)
    assert lines[0].startswith("modelops run not running; last seen ")
    assert "replicas=" not in next(line for line in lines if line.startswith("md/"))


def test_a_folder_without_a_heartbeat_is_not_live(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _finished_run(tmp_path / "state", tmp_path)
    lines = _status(tmp_path / "state", capsys)
    assert lines[0] == "modelops run is not running: last recorded state, no live numbers"


def test_a_live_run_shows_live_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], modelops_process: int
) -> None:
    store = _finished_run(tmp_path / "state", tmp_path)
    store.beat(Heartbeat(pid=modelops_process, seen=datetime.now(UTC)))
    lines = _status(tmp_path / "state", capsys)
    assert not any(line.startswith("modelops run") for line in lines)
    deployment = next(line for line in lines if line.startswith("md/digits"))
    assert "replicas=1/1" in deployment and "rps=0" in deployment


def test_a_silent_heartbeat_goes_stale() -> None:
    now = datetime.now(UTC)
    fresh = Heartbeat(pid=7, seen=now - timedelta(seconds=2))
    stale = Heartbeat(pid=7, seen=now - timedelta(seconds=view.STALE_AFTER_S + 1))
    assert view.is_live(fresh, now, alive=lambda pid: True)
    assert not view.is_live(fresh, now, alive=lambda pid: False)
    assert not view.is_live(stale, now, alive=lambda pid: True)
    assert not view.is_live(None, now, alive=lambda pid: True)
