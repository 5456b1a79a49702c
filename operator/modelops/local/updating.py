"""An IncrementalUpdate in local mode: watch the data folder, run updates, gate, promote.

The decisions are `modelops.lifecycle`'s (delta, thresholds, child spec, promotion
gate); this module lists the data, runs the child TrainingJob and the two
evaluations as processes, and records the outcome.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from modelops.api.artifact import SnapshotManifest
from modelops.api.base import ObjectMeta
from modelops.api.training import TrainingJob, TrainingPhase
from modelops.api.update import (
    CurrentRun,
    DataDelta,
    IncrementalUpdate,
    IncrementalUpdateStatus,
    RunRecord,
    SnapshotSummary,
    UpdatePhase,
)
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.delta import compute_delta, schema_problem
from modelops.lifecycle.promotion import decide_promotion
from modelops.lifecycle.update import (
    already_tried,
    child_training_spec,
    record_run,
    run_name,
    should_start_run,
)
from modelops.local.context import LocalContext, now
from modelops.local.training import LocalTraining

KIND = "IncrementalUpdate"


def _listing(uri: str, fmt: str) -> SnapshotManifest:
    from modelops.api.training import DataFormat
    from modelops_runtime.data.shards import snapshot  # heavy imports, only when used

    return snapshot(uri, DataFormat(fmt))


def shard_digest(listing: SnapshotManifest) -> str:
    from modelops_runtime.data.shards import digest

    value: str = digest(listing)
    return value


def _columns(uri: str, fmt: str) -> list[str]:
    from modelops.api.training import DataFormat
    from modelops_runtime.data.readers import read_columns

    columns: list[str] = read_columns(uri, DataFormat(fmt))
    return columns


def _stored_snapshot(store: str, model: str, version: int) -> SnapshotManifest | None:
    from modelops_runtime import artifacts

    snapshot: SnapshotManifest | None = artifacts.load_snapshot(
        artifacts.version_uri(store, model, version)
    )
    return snapshot


class LocalUpdate:
    """Keeps one model fresh; at most one update run at a time."""

    def __init__(self, update: IncrementalUpdate, recipe: TrainingJob, ctx: LocalContext) -> None:
        self.update = update
        self.recipe = recipe
        self.ctx = ctx
        self.name = update.metadata.name
        stored = ctx.state.load_status(KIND, self.name)
        self.status = (
            IncrementalUpdateStatus.model_validate(stored) if stored else IncrementalUpdateStatus()
        )
        self.run: LocalTraining | None = None
        self.last_check: datetime | None = None
        if self.status.current_run is not None:  # resume the run a previous process started
            self.run = self._training(self.status.current_run.training_job, resume=True)

    @property
    def resource(self) -> str:
        return f"iu/{self.name}"

    @property
    def model(self) -> str:
        return self.recipe.spec.output.model_name

    @property
    def store(self) -> str:
        return self.recipe.spec.output.store_uri

    def promoted(self) -> int | None:
        versions = self.ctx.state.promotions(self.model)
        return versions[-1] if versions else None

    def _training(self, name: str, resume: bool = False) -> LocalTraining:
        promoted = self.promoted()
        spec = child_training_spec(self.recipe.spec, self.update.spec, promoted)
        child = TrainingJob(
            metadata=ObjectMeta(name=name, labels={"modelops.dev/update": self.name}),
            spec=spec,
        )
        return LocalTraining(child, self.ctx)

    def _condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        conditions = set_condition(self.status.conditions, type_, ok, reason, message, now(), 1)
        self.status = self.status.model_copy(update={"conditions": conditions})

    async def _evaluate(self, version: int) -> dict[str, float]:
        promotion = self.update.spec.promotion
        data = self.recipe.spec.data
        args = ["evaluate", "--store", self.store, "--model", self.model]
        args += ["--version", str(version), "--format", data.format.value]
        if promotion.evaluation_uri:
            args += ["--data", promotion.evaluation_uri]
        elif data.holdout_uri:
            args += ["--data", data.holdout_uri]
        else:  # a fixed split of the recipe's data, the same for both versions
            args += ["--data", data.uri, "--part", "validation"]
            args += ["--seed", str(self.recipe.spec.training.seed)]
            args += ["--validation-split", str(data.validation_split)]
        process = await asyncio.create_subprocess_exec(
            *self.ctx.runtime(*args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(err.decode(errors="replace").strip().splitlines()[-1:] or "failed")
        metrics: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return metrics

    def _finish(self, decision: str, reason: str, version: int | None, **metrics: Any) -> None:
        assert self.status.current_run is not None
        run = self.status.current_run
        record = RunRecord(
            training_job=run.training_job,
            version=version,
            delta=run.delta,
            current_version=run.base_version,
            snapshot_digest=run.snapshot_digest,
            decision=decision,
            reason=reason,
            finished_at=now(),
            **metrics,
        )
        history = record_run(self.status, record, self.update.spec.history_limit)
        self.status = self.status.model_copy(
            update={
                "history": history,
                "current_run": None,
                "last_result": decision,
                "phase": UpdatePhase.IDLE,
            }
        )
        self._condition("Degraded", decision == "Failed", decision, reason)
        self._condition("LastRunPromoted", decision == "Promoted", decision, reason)
        self.ctx.event(self.resource, decision, reason)
        self.run = None

    async def _gate(self, run: LocalTraining) -> None:
        version_ref = run.status.model_version
        assert version_ref is not None
        candidate_version = version_ref.version
        current_version = self.promoted()
        metric = self.update.spec.promotion.metric
        self.status = self.status.model_copy(update={"phase": UpdatePhase.EVALUATING})
        try:
            candidate = (await self._evaluate(candidate_version)).get(metric)
            current = (
                (await self._evaluate(current_version)).get(metric)
                if current_version is not None
                else None
            )
        except RuntimeError as error:
            self._finish("Failed", f"evaluation failed: {error}", candidate_version)
            return
        verdict = decide_promotion(candidate, current, self.update.spec.promotion)
        scores = {"candidate_metric": candidate, "current_metric": current}
        if verdict.promote:
            self.ctx.state.promote(self.model, candidate_version)
            self.status = self.status.model_copy(update={"promoted_version": candidate_version})
            self._finish(
                "Promoted", f"v{candidate_version}: {verdict.reason}", candidate_version, **scores
            )
        else:
            self._finish(
                "Rejected", f"v{candidate_version}: {verdict.reason}", candidate_version, **scores
            )

    async def _check_data(self) -> None:
        data = self.recipe.spec.data
        listing = await asyncio.to_thread(_listing, data.uri, data.format.value)
        promoted = self.promoted()
        baseline = (
            await asyncio.to_thread(_stored_snapshot, self.store, self.model, promoted)
            if promoted is not None
            else None
        )
        delta = compute_delta(baseline, listing)
        summary = DataDelta(
            new_shards=len(delta.new),
            changed_shards=len(delta.changed),
            deleted_shards=len(delta.deleted),
            new_rows=delta.fresh_rows,
        )
        self.status = self.status.model_copy(
            update={
                "pending_delta": summary,
                "last_snapshot": SnapshotSummary(
                    shards=len(listing.shards), rows=listing.rows, observed_at=now()
                ),
            }
        )
        digest = shard_digest(listing)
        decision = should_start_run(
            self.update.spec, self.status, summary, now(), self.last_check, promoted
        )
        self.last_check = now()
        if not decision.start or already_tried(self.status, digest) is not None:
            return  # a rejected or failed run on this very data would only repeat itself
        expected = baseline.columns if baseline else listing.columns
        for shard in delta.fresh:
            found = await asyncio.to_thread(
                _columns, f"{data.uri.rstrip('/')}/{shard.path}", data.format.value
            )
            problem = schema_problem(expected, found, shard.path)
            if problem:
                self._start_run(summary, digest)
                self._finish("Failed", problem, None)
                return
        self._start_run(summary, digest)

    def _start_run(self, delta: DataDelta, digest: str) -> None:
        runs = self.status.runs + 1
        name = run_name(self.name, runs)
        current = CurrentRun(
            training_job=name,
            started_at=now(),
            delta=delta,
            base_version=self.promoted(),
            snapshot_digest=digest,
        )
        self.status = self.status.model_copy(
            update={"current_run": current, "phase": UpdatePhase.TRAINING, "runs": runs}
        )
        self.run = self._training(name)
        self.ctx.event(
            self.resource,
            "UpdateStarted",
            f"{name}: {delta.new_shards} new, {delta.changed_shards} changed shard(s)",
        )

    async def tick(self) -> None:
        if self.update.spec.suspend and self.run is None:
            return
        if self.run is not None:
            self.run.tick()
            if self.run.status.phase == TrainingPhase.SUCCEEDED:
                await self._gate(self.run)
            elif self.run.status.phase == TrainingPhase.FAILED:
                self._finish("Failed", self.run.status.message or "training failed", None)
        else:
            due = self.last_check is None or (
                (now() - self.last_check).total_seconds()
                >= self.update.spec.detect.interval_seconds
            )
            if due:
                await self._check_data()
        self.save()

    def save(self) -> None:
        self.ctx.state.save_status(
            KIND, self.name, self.update.spec.to_dict(), self.status.to_dict()
        )
