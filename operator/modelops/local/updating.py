"""An IncrementalUpdate in local mode: read → plan (`lifecycle.update.plan_update`) → write.

The decisions are the same pure plan the cluster's reconcile follows; this module only
reads (the data folder, the child training's state, the evaluations' metrics), carries
out what the plan asks (start the child TrainingJob as processes, evaluate both
versions, record a promotion) and stores the status.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime

from modelops.api.base import ObjectMeta
from modelops.api.training import TrainingJob
from modelops.api.update import IncrementalUpdate, IncrementalUpdateStatus
from modelops.lifecycle.update import child_training_spec, plan_update
from modelops.lifecycle.updateplan import Comparison, Evaluation, Observed, RunChild, UpdatePlan
from modelops.local.context import LocalContext, now
from modelops.local.fingerprints import LocalScanner
from modelops.local.training import LocalTraining

KIND = "IncrementalUpdate"
# Plans that ask to come back at once (a run recorded, a candidate named) are followed
# within the same tick, up to this many.
_STEPS = 4


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
        self.evaluation: Evaluation | None = None
        self.last_check: datetime | None = None
        # Shards already hashed are not read again, in this process or the next run.
        self.scanner = LocalScanner(ctx.state.root / "fingerprints" / f"{self.name}.json")
        if self.status.current_run is not None:  # resume the run a previous process started
            self.run = self._training(self.status.current_run.training_job)

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

    def _training(self, name: str) -> LocalTraining:
        spec = child_training_spec(self.recipe.spec, self.update.spec, self.promoted())
        child = TrainingJob(
            metadata=ObjectMeta(name=name, labels={"modelops.dev/update": self.name}),
            spec=spec,
        )
        return LocalTraining(child, self.ctx)

    # -- read -------------------------------------------------------------------------------

    def _observe(self) -> Observed:
        run = self.status.current_run
        child: RunChild | None = None
        if run is not None and self.run is not None:
            status = self.run.status
            produced = status.model_version
            child = RunChild(
                phase=status.phase.value if status.phase else None,
                message=status.message,
                version=produced.version if produced else None,
            )
        return Observed(
            name=self.name,
            spec=self.update.spec,
            status=self.status,
            now=now(),
            generation=1,
            model=self.model,
            evaluation_name=f"{run.training_job}-eval" if run else "",
            serving=self.promoted(),
            last_check=self.last_check,
            child=child,
            evaluation=self.evaluation,
        )

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

    async def _compare(self, candidate: int, current: int | None) -> Evaluation:
        """Both versions on the same data, as the cluster's evaluation Job reports them."""
        try:
            ours = await self._evaluate(candidate)
            theirs = await self._evaluate(current) if current is not None else None
        except RuntimeError as error:
            return Evaluation(failure=str(error))
        return Evaluation(result=Comparison(candidate=ours, current=theirs))

    # -- plan and write ---------------------------------------------------------------------

    async def _pass(self) -> UpdatePlan:
        observed = self._observe()
        plan = plan_update(observed)
        if plan.scan_due:
            data = self.recipe.spec.data
            try:
                found = await asyncio.to_thread(
                    self.scanner.scan,
                    data.uri,
                    data.format,
                    self.store,
                    self.model,
                    plan.scan_baseline,
                )
            except Exception as error:  # a missing folder: said in the status, retried
                message = f"listing {data.uri}: {type(error).__name__}: {error}"
                observed = replace(observed, scan_error=message)
            else:
                self.last_check = observed.now
                observed = replace(observed, scan=found)
            plan = plan_update(observed)
        run = plan.status.current_run
        if plan.create == "TrainingJob" and run is not None:
            self.run = self._training(run.training_job)
        elif plan.create == "Evaluation" and run is not None:
            assert run.candidate_version is not None
            self.evaluation = await self._compare(run.candidate_version, run.base_version)
        if plan.promoted is not None:
            self.ctx.state.promote(self.model, plan.promoted)
        if run is None:
            self.run, self.evaluation = None, None
        self.status = plan.status
        for note in plan.events:
            self.ctx.event(self.resource, note.reason, note.message)
        return plan

    async def tick(self) -> None:
        if self.run is not None:
            self.run.tick()
        for _ in range(_STEPS):
            plan = await self._pass()
            if plan.requeue_after != 0.0 and plan.create is None:
                break
        self.save()

    def save(self) -> None:
        self.ctx.state.save_status(
            KIND, self.name, self.update.spec.to_dict(), self.status.to_dict()
        )
