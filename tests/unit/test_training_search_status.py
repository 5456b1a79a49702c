"""A search's status from the progress document: counts by state, the best, a bounded table."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from modelops.api.search import SearchSpec
from modelops.api.training import TrainingJob, TrainingJobSpec, TrainingJobStatus
from modelops.api.training_status import SearchStatus, TrialCounts, TrialState
from modelops.k8s.metrics import OperatorMetrics
from modelops.lifecycle.training import Observed, PodView, Role, plan
from modelops.lifecycle.training_search import (
    MAX_PARAMS,
    MAX_VALUE,
    TOP_ROWS,
    search_from_text,
    search_status,
    summary_line,
)
from modelops.local import runner, search_view
from modelops.local.context import LocalContext
from modelops.local.processes import Supervisor
from modelops.local.state import StateStore
from modelops.local.training import LocalTraining
from tests.unit.manifests import training_job

SPACE = [
    {"path": "training.optimizer.learningRate", "type": "logUniform", "low": 1e-4, "high": 0.1}
]


def search(**changes: Any) -> SearchSpec:
    raw: dict[str, Any] = {
        "trials": 16,
        "metric": "val_accuracy",
        "mode": "max",
        "space": SPACE,
        **changes,
    }
    return SearchSpec.model_validate(raw)


def trial(
    i: int, accuracy: float | None, state: str | None = "running", **extra: Any
) -> dict[str, Any]:
    metrics = {"val_loss": 1.0 - (accuracy or 0.0), "train_loss": 0.3}
    if accuracy is not None:
        metrics["val_accuracy"] = accuracy
    out: dict[str, Any] = {
        "id": f"trial-{i}",
        "params": {"training.optimizer.learningRate": json.dumps(0.001 * (i + 1))},
        "epoch": i % 5 + 1,
        "metrics": metrics,
        **extra,
    }
    if state is not None:
        out["state"] = state
    return out


def test_counts_best_and_table_come_from_a_current_document() -> None:
    states = ["finished"] * 3 + ["stoppedEarly"] * 9 + ["running"] * 2 + ["failed"] * 1
    trials = [trial(i, 0.5 + 0.02 * i, state) for i, state in enumerate(states)]
    doc = {
        "phase": "search",
        "trials": trials,
        "trialCounts": {"running": 2, "stoppedEarly": 9, "finished": 3, "failed": 1},
        "best": {"trial": "trial-13", "metrics": {"val_accuracy": 0.76}},
    }
    status = search_status(doc, search())
    assert status is not None
    assert status.trial_counts == TrialCounts(running=2, stopped_early=9, finished=3, failed=1)
    assert status.summary == "13/16 done (9 stopped early, 1 failed), 2 running"
    assert status.best is not None and status.best.id == "trial-13"
    assert status.best.metrics == {"val_accuracy": 0.76}
    assert [r.id for r in status.top] == [f"trial-{i}" for i in range(14, 4, -1)]
    assert len(status.top) == TOP_ROWS
    top = status.top[0]
    assert top.state == TrialState.FAILED and top.epoch == 14 % 5 + 1
    # Only the objective metric is kept in a row; the parameters keep their path.
    assert top.metrics == {"val_accuracy": 0.5 + 0.02 * 14}
    assert top.params == {"training.optimizer.learningRate": json.dumps(0.015)}


def test_an_older_document_without_states_counts_and_best_is_read() -> None:
    trials = [trial(i, 0.6 + 0.01 * i, state=None) for i in range(4)]
    trials.append({"id": "trial-4", "params": {}, "epoch": 0, "metrics": {}})
    status = search_status({"phase": "search", "trials": trials}, search())
    assert status is not None
    # A trial that reported is running; one that has not is counted nowhere yet.
    assert status.trial_counts == TrialCounts(running=4)
    assert status.best is not None and status.best.id == "trial-3"
    assert status.top[0].state == TrialState.RUNNING
    assert [r.id for r in status.top] == ["trial-3", "trial-2", "trial-1", "trial-0"]


def test_the_final_document_of_an_older_runtime_counts_its_trials_finished() -> None:
    records = [
        {
            "id": "trial-1",
            "params": {"model.dropout": "0.1"},
            "metrics": {"val_loss": 0.2},
            "epochs": 7,
        },
        {
            "id": "trial-0",
            "params": {"model.dropout": "0.3"},
            "metrics": {"val_loss": 0.4},
            "epochs": 7,
        },
    ]
    status = search_status(
        {"phase": "finished", "trials": records}, search(metric="val_loss", mode="min")
    )
    assert status is not None
    assert status.trial_counts == TrialCounts(finished=2)
    assert status.summary == "2/16 done"
    assert status.best is not None and status.best.id == "trial-1" and status.best.epoch == 7
    assert [r.id for r in status.top] == ["trial-1", "trial-0"]


def test_a_document_without_a_search_gives_none() -> None:
    assert search_status({"phase": "training", "epoch": 3}, search()) is None
    assert search_from_text(None, search()) is None
    assert search_from_text("{not json", search()) is None
    assert search_from_text("[1, 2]", search()) is None


def test_sizes_are_bounded_whatever_the_document_holds() -> None:
    params = {f"model.p{i}": "x" * 500 for i in range(40)}
    metrics = {f"val_m{i}": 0.1 for i in range(50)} | {"val_accuracy": 0.9}
    trials = [
        {"id": f"trial-{i}" + "y" * 300, "params": params, "metrics": metrics, "epoch": 2}
        for i in range(200)
    ]
    status = search_status({"trials": trials}, search())
    assert status is not None
    assert len(status.top) == TOP_ROWS
    for row in status.top:
        assert len(row.params) == MAX_PARAMS
        assert all(len(v) == MAX_VALUE for v in row.params.values())
        assert row.metrics == {"val_accuracy": 0.9}
        assert len(row.id) <= 128
    # What the table holds passes the status schema, so the API server stores it.
    SearchStatus.model_validate(status.to_dict())
    assert len(json.dumps(status.to_dict())) < 20_000


def test_malformed_entries_are_skipped_not_fatal() -> None:
    trials: list[Any] = [
        "trial-x",
        {"params": {}},
        {"id": "trial-1", "state": "exploded", "epoch": -3, "metrics": {"val_accuracy": math.nan}},
        {"id": "trial-2", "state": "finished", "epoch": True, "metrics": {"val_accuracy": "high"}},
        {
            "id": "trial-3",
            "state": "finished",
            "epoch": 4,
            "metrics": {"val_accuracy": 0.8},
            "params": [1],
        },
    ]
    doc = {
        "trials": trials,
        "trialCounts": {"running": "two", "finished": -1},
        "best": {"trial": 7},
    }
    status = search_status(doc, search())
    assert status is not None
    assert [r.id for r in status.top] == ["trial-3"]
    assert status.top[0].params == {}
    # Bad counts are dropped: a negative one reads as none.
    assert status.trial_counts == TrialCounts()
    assert status.best is not None and status.best.id == "trial-3"
    bad = search_status({"trials": trials[2:4]}, search())
    assert bad is not None and bad.top == []
    # An unknown state with no epoch counts nowhere; a valid one counts.
    assert bad.trial_counts == TrialCounts(finished=1)


def test_with_several_objectives_the_front_ranks_first_and_rows_keep_each_objective() -> None:
    spec = search(
        objectives=[
            {"metric": "val_accuracy", "mode": "max"},
            {"metric": "params", "mode": "min"},
        ],
        select={"metric": "val_accuracy", "tieBreak": {"metric": "params", "mode": "min"}},
    )
    trials = [
        trial(0, 0.95, "finished", pareto=False)
        | {"metrics": {"val_accuracy": 0.95, "params": 9000.0}},
        trial(1, 0.93, "finished", pareto=True)
        | {"metrics": {"val_accuracy": 0.93, "params": 1000.0}},
        trial(2, 0.97, "finished", pareto=True)
        | {"metrics": {"val_accuracy": 0.97, "params": 8000.0}},
    ]
    status = search_status({"trials": trials, "best": {"trial": "trial-1"}}, spec)
    assert status is not None
    assert [r.id for r in status.top] == ["trial-2", "trial-1", "trial-0"]
    assert [r.pareto for r in status.top] == [True, True, False]
    assert status.top[1].metrics == {"val_accuracy": 0.93, "params": 1000.0}
    # The runtime's pick from the front, not the top of the first objective.
    assert status.best is not None and status.best.id == "trial-1"


def test_a_best_trial_missing_from_the_list_keeps_its_metrics() -> None:
    doc = {
        "trials": [],
        "best": {"trial": "trial-9", "metrics": {"val_accuracy": 0.91, "other": 1}},
    }
    status = search_status(doc, search())
    assert status is not None and status.best is not None
    assert status.best.id == "trial-9" and status.best.metrics == {"val_accuracy": 0.91}


def test_summary_line() -> None:
    assert summary_line(TrialCounts(), 8) == "0/8 done"
    assert (
        summary_line(TrialCounts(finished=1, failed=2, running=3), 8)
        == "3/8 done (2 failed), 3 running"
    )


def _observed(doc: dict[str, Any], with_search: bool = True) -> Observed:
    raw = training_job()["spec"]
    if with_search:
        raw["search"] = {"trials": 16, "metric": "val_accuracy", "mode": "max", "space": SPACE}
    return Observed(
        spec=TrainingJobSpec.model_validate(raw),
        status=TrainingJobStatus(),
        generation=1,
        pods=(
            PodView("job-0-head", Role.HEAD, 0, 0, "Running", True, progress=json.dumps(doc)),
            PodView("job-0-worker-0", Role.WORKER, 0, 0, "Running", True),
            PodView("job-0-worker-1", Role.WORKER, 0, 0, "Running", True),
        ),
        version=1,
        job_id="uid-1",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        retry_backoff_seconds=10.0,
    )


def test_the_plan_copies_the_search_from_the_head_annotation_into_status() -> None:
    doc = {
        "epoch": 9,
        "totalEpochs": 480,
        "metrics": {"val_accuracy": 0.8},
        "phase": "search",
        "trials": [trial(0, 0.8, "running"), trial(1, 0.7, "stoppedEarly")],
        "trialCounts": {"running": 1, "stoppedEarly": 1, "finished": 0, "failed": 0},
    }
    status = plan(_observed(doc)).status
    assert status.search is not None
    assert status.search.trial_counts == TrialCounts(running=1, stopped_early=1)
    assert status.search.best is not None and status.search.best.id == "trial-0"
    wire = status.to_dict()["search"]
    assert wire["trialCounts"] == {"running": 1, "stoppedEarly": 1, "finished": 0, "failed": 0}
    assert wire["top"][1]["state"] == "stoppedEarly"
    # A job without a search never gets one, whatever the document says.
    assert plan(_observed(doc, with_search=False)).status.search is None


def test_trial_gauges_follow_the_counts_and_go_with_the_job() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry)
    metrics.observe_trials("ns", "job", TrialCounts(running=2, stopped_early=5, finished=1))

    def value(state: str) -> float | None:
        return registry.get_sample_value(
            "modelops_trainingjob_trials", {"namespace": "ns", "trainingjob": "job", "state": state}
        )

    assert [value(s) for s in ("running", "stoppedEarly", "finished", "failed")] == [2, 5, 1, 0]
    metrics.observe_trials("ns", "job", None)
    assert value("running") is None
    metrics.observe_trials("ns", "job", None)  # removing twice is harmless


def test_modelops_status_prints_the_best_trials() -> None:
    status = search_status(
        {"trials": [trial(0, 0.81, "finished"), trial(1, 0.9, "stoppedEarly", pareto=True)]},
        search(),
    )
    assert status is not None
    record = {"kind": "TrainingJob", "name": "digits", "status": {"search": status.to_dict()}}
    lines = search_view.plain_lines(record)
    assert (
        lines[0] == "tj/digits search: 2/16 done (1 stopped early); best trial-1 val_accuracy=0.9"
    )
    assert (
        lines[1] == "  trial-1  stoppedEarly pareto  epoch 2  val_accuracy=0.9  learningRate=0.002"
    )
    assert lines[2].startswith("  trial-0  finished  epoch 1  val_accuracy=0.81")
    record["status"]["search"]["top"][0]["params"] = {
        "model.dropout": "0.35125700137",
        "model.hiddenLayers": "[32]",
    }
    assert search_view.plain_lines(record)[1].endswith("dropout=0.3513 hiddenLayers=[32]")
    grid = search_view.table(record)
    assert grid is not None and grid.row_count == 2
    assert search_view.plain_lines({"kind": "TrainingJob", "name": "x", "status": {}}) == []
    assert search_view.table({"kind": "ModelDeployment", "status": {"search": {}}}) is None


def test_local_mode_reads_the_search_and_modelops_status_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = training_job()
    manifest["spec"]["search"] = {
        "trials": 4,
        "metric": "val_accuracy",
        "mode": "max",
        "space": SPACE,
    }
    state = tmp_path / "state"
    ctx = LocalContext(
        root=tmp_path, state=StateStore(state), supervisor=Supervisor(tmp_path / "logs", "t")
    )
    training = LocalTraining(TrainingJob.model_validate(manifest), ctx)
    doc = {
        "epoch": 3,
        "totalEpochs": 120,
        "metrics": {"val_accuracy": 0.9},
        "phase": "search",
        "trials": [
            trial(0, 0.9, "finished"),
            trial(1, 0.7, "stoppedEarly"),
            trial(2, 0.8, "running"),
        ],
        "trialCounts": {"running": 1, "stoppedEarly": 1, "finished": 1, "failed": 0},
    }
    training.progress_path.parent.mkdir(parents=True, exist_ok=True)
    training.progress_path.write_text(json.dumps(doc))
    training._read_progress()
    training.save()
    assert training.status.search is not None
    assert training.status.search.trial_counts == TrialCounts(
        running=1, stopped_early=1, finished=1
    )
    assert runner.status(state) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index(
        "tj/digits-mlp search: 2/4 done (1 stopped early), 1 running; best trial-0 val_accuracy=0.9"
    )
    assert [line.split()[0] for line in out[at + 1 : at + 4]] == ["trial-0", "trial-2", "trial-1"]
