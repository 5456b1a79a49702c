"""Local mode's IncrementalUpdate: read → `plan_update` → write, with the processes faked.

The plan itself is tested in test_update_plan.py; here the adapter's glue: it scans when
asked, starts the child training, evaluates both versions, records the promotion and
keeps the status across a restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from modelops.api.training import ModelVersionRef, TrainingJob, TrainingJobStatus, TrainingPhase
from modelops.api.update import DataDelta, IncrementalUpdate
from modelops.lifecycle.datascan import DataScan
from modelops.local import updating
from modelops.local.context import LocalContext
from modelops.local.state import StateStore
from tests.unit.manifests import incremental_update, training_job


@dataclass
class FakeTraining:
    """What LocalUpdate reads of a LocalTraining: its status, advanced by `tick`."""

    name: str
    status: TrainingJobStatus = field(default_factory=TrainingJobStatus)
    ticks: int = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks >= 2:
            self.status = TrainingJobStatus(
                phase=TrainingPhase.SUCCEEDED,
                model_version=ModelVersionRef(name="digits", version=2, uri="file:///s/v2"),
            )


def _update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accuracy: float) -> Any:
    store = StateStore(tmp_path)
    ctx = LocalContext(root=tmp_path, state=store, supervisor=None)  # type: ignore[arg-type]
    store.promote("digits", 1)
    update = IncrementalUpdate.model_validate(incremental_update())
    recipe = TrainingJob.model_validate(training_job())
    scans: list[int | None] = []

    def scan(uri: str, fmt: Any, store_uri: str, model: str, baseline: int | None) -> DataScan:
        scans.append(baseline)
        new = 1 if baseline == 1 else 0
        delta = DataDelta(new_shards=new, new_rows=10 * new)
        return DataScan(shards=3, rows=30, digest="sha256:aa", delta=delta)

    async def evaluate(self: Any, version: int) -> dict[str, float]:
        return {"accuracy": accuracy if version == 2 else 0.9}

    monkeypatch.setattr(updating.LocalScanner, "scan", lambda self, *args: scan(*args))
    monkeypatch.setattr(updating.LocalUpdate, "_evaluate", evaluate)
    monkeypatch.setattr(updating.LocalUpdate, "_training", lambda self, name: FakeTraining(name))
    return updating.LocalUpdate(update, recipe, ctx), ctx, scans


def _ticks(local: Any, count: int) -> None:
    for _ in range(count):
        asyncio.run(local.tick())


def test_new_data_runs_an_update_that_is_promoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, ctx, scans = _update(tmp_path, monkeypatch, accuracy=0.95)
    _ticks(local, 1)
    assert local.status.current_run is not None and local.status.runs == 1
    assert isinstance(local.run, FakeTraining) and scans == [1]
    _ticks(local, 2)
    assert local.status.current_run is None
    record = local.status.history[-1]
    assert record.decision == "Promoted" and record.version == 2
    assert (record.candidate_metric, record.current_metric) == (0.95, 0.9)
    assert ctx.state.promotions("digits") == [1, 2]
    assert scans[-1] == 2  # after the promotion the data is compared with version 2
    reasons = [e.reason for e in ctx.events]
    assert reasons[0] == "UpdateStarted" and "Promoted" in reasons
    # A new process reads the stored status.
    again = updating.LocalUpdate(local.update, local.recipe, ctx)
    assert again.status.history[-1].decision == "Promoted"


def test_a_worse_candidate_is_rejected_and_not_retried_on_the_same_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, ctx, _ = _update(tmp_path, monkeypatch, accuracy=0.5)
    _ticks(local, 3)
    assert local.status.history[-1].decision == "Rejected"
    assert ctx.state.promotions("digits") == [1]
    local.last_check = None  # due again at once
    _ticks(local, 1)
    assert local.status.current_run is None and local.status.runs == 1
