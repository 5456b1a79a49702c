"""One reconcile of one IncrementalUpdate: read, plan (`lifecycle.update.plan_update`), write.

Synchronous on purpose: it runs on a worker thread, so neither the blocking client nor
the data scan (file or object-store I/O, hashing new shards) stalls Kopf's event loop.
Everything derives from what is stored and observed, so a restarted operator carries on
where the last one stopped:

- `status.currentRun` names the run in flight; it is written (with `status.runs`, the
  run counter) before the child TrainingJob exists, and the child is created under the
  deterministic name `<update>-run-<n>` on the next pass, so a crash in between makes
  no duplicate and loses no run;
- once the child has Succeeded, the candidate version and the evaluation Job's name
  are written, then the Job is created, again under a deterministic name;
- the evaluation pod's termination message carries both versions' metrics; the plan's
  gate turns them into Promoted or Rejected, recorded in the history with the delta and
  both metrics, in the same status write that clears the run.

Promotions live in this object's status (`promotedVersion`, `promotedVersions`): the
ModelDeployment controller reads them through a Kopf index, and never takes a child
TrainingJob's version (labelled `modelops.dev/update`) as promoted by itself.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelops.api.base import GROUP, VERSION
from modelops.api.training import TrainingJobSpec
from modelops.api.update import IncrementalUpdateSpec, IncrementalUpdateStatus
from modelops.api.validation import problems_from_error
from modelops.k8s.controller.status import Clock, Outcome, StatusWriter, utc_now
from modelops.k8s.incrementalupdate import builders, data, datascans, names, observe
from modelops.k8s.kube import ApiError, Kube, custom_path, manifest_path, namespaced_path
from modelops.k8s.metrics import OperatorMetrics
from modelops.lifecycle.update import plan_blocked, plan_refused, plan_update
from modelops.lifecycle.updateplan import Blocked, Evaluation, Observed, UpdatePlan

log = logging.getLogger(__name__)

RESOURCE = names.PLURAL
Body = dict[str, Any]

# API errors that no retry will cure: the child is refused as it is.
_REFUSED = frozenset({400, 403, 422})


@dataclass(frozen=True)
class UpdateSettings:
    """How the controller behaves, beyond what each update's spec says."""

    evaluation: builders.EvaluationSettings
    resync_seconds: float = 300.0
    workers: int = 4


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: UpdateSettings,
        metrics: OperatorMetrics,
        source: data.DataSource | None = None,
        clock: Clock = utc_now,
        scanner: datascans.JobScanner | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.data: data.DataSource = source or data.RuntimeData()
        # With a scanner the data is looked at by a pod in the update's namespace
        # (`dataAccess: job`); without one, by this process.
        self.scanner = scanner
        self.clock = clock
        self.status = StatusWriter(kube, metrics, names.KIND)
        # Per update uid: when its data was last scanned. The status keeps the time of the
        # last scan that changed something (observedAt alone never justifies a write),
        # which stands in after a restart.
        self._checked: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def forget(self, uid: str) -> None:
        self.status.forget(uid)
        with self._lock:
            self._checked.pop(uid, None)

    def _last_check(self, uid: str, status: IncrementalUpdateStatus) -> datetime | None:
        with self._lock:
            checked = self._checked.get(uid)
        if checked is not None:
            return checked
        return status.last_snapshot.observed_at if status.last_snapshot else None

    def reconcile(self, namespace: str, name: str) -> Outcome:
        path = custom_path(GROUP, VERSION, RESOURCE, namespace, name)
        update = self.status.read_live(path)  # fresh: the watch may lag our own last write
        if update is None:
            return Outcome()
        meta = update["metadata"]
        generation = meta.get("generation")
        raw_status: Body = update.get("status") or {}
        uid = str(meta["uid"])
        plan = self._plan(namespace, name, uid, update, observe.parse_status(raw_status))
        current = observe.parse_status(raw_status).to_dict()
        self.status.write(path, update, current, plan.status.to_dict())
        if plan.prune:
            self._prune(namespace, name, uid, plan.status)
        return Outcome(events=plan.events, requeue_after=plan.requeue_after, generation=generation)

    # -- read and plan --------------------------------------------------------------------

    def _plan(
        self, namespace: str, name: str, uid: str, update: Body, status: IncrementalUpdateStatus
    ) -> UpdatePlan:
        now, generation = self.clock(), update["metadata"].get("generation")
        try:
            spec = IncrementalUpdateSpec.model_validate(update.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            return plan_blocked(Blocked(status, now, generation, "InvalidSpec", problems, None))
        interval = float(spec.detect.interval_seconds)
        jobs = self.kube.list(custom_path(GROUP, VERSION, "trainingjobs", namespace))
        by_name = {str(j["metadata"]["name"]): j for j in jobs}
        ref = spec.training_job_ref.name
        recipe_body = by_name.get(ref)
        if recipe_body is None:
            message = f"TrainingJob {ref} not found"
            blocked = Blocked(status, now, generation, "TrainingJobNotFound", message, interval)
            return plan_blocked(blocked)
        try:
            recipe = TrainingJobSpec.model_validate(recipe_body.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            message = f"TrainingJob {ref}: {problems}"
            blocked = Blocked(status, now, generation, "InvalidTrainingJob", message, interval)
            return plan_blocked(blocked)
        settings = self.settings.evaluation
        ctx = builders.UpdateContext(name, namespace, uid, spec, recipe, settings)
        run = status.current_run
        observed = Observed(
            name=name,
            spec=spec,
            status=status,
            now=now,
            generation=generation,
            model=ctx.model,
            evaluation_name=names.evaluation_job(name, status.runs),
            serving=observe.serving_version(jobs, ctx.model, status),
            last_check=self._last_check(uid, status),
            child=observe.run_child(by_name.get(run.training_job), uid) if run else None,
            evaluation=self._evaluation(ctx, status),
        )
        plan = plan_update(observed)
        if plan.scan_due:
            scanned = self._scan(ctx, observed, plan.scan_baseline)
            if scanned is None:  # a scan pod is still looking: its events wake us sooner
                return replace(plan, scan_due=False, requeue_after=datascans.POLL_SECONDS)
            observed = scanned
            plan = plan_update(observed)
        if plan.create is not None:
            plan = self._create(ctx, observed, plan)
        return plan

    def _evaluation(
        self, ctx: builders.UpdateContext, status: IncrementalUpdateStatus
    ) -> Evaluation | None:
        """The run's evaluation, once its Job was named (after the training succeeded)."""
        run = status.current_run
        if run is None or run.evaluation_job is None:
            return None
        path = custom_path("batch", "v1", "jobs", ctx.namespace, run.evaluation_job)
        try:
            job = self.kube.get(path)
        except ApiError as error:
            if error.not_found:
                return None
            raise
        selector = (
            f"{names.evaluation_selector(ctx.name)},"
            f"{names.LABEL_RUN}={names.label_value(run.training_job)}"
        )
        pods = self.kube.list(namespaced_path("Pod", ctx.namespace), selector)
        return observe.evaluation_state(job, pods)

    def _scan(
        self, ctx: builders.UpdateContext, observed: Observed, baseline: int | None
    ) -> Observed | None:
        """The data against the serving version's snapshot; None while a scan pod runs."""
        recipe = ctx.recipe
        try:
            if self.scanner is not None:
                found = self.scanner.scan(ctx, baseline)
                if found is None:
                    return None
            else:
                found = data.scan(self.data, recipe.data, ctx.store, ctx.model, baseline)
        except datascans.ScanFailed as error:  # the scan pod said why
            log.warning("%s/%s: %s", ctx.namespace, ctx.name, error)
            return replace(observed, scan_error=str(error))
        except ApiError:
            raise  # the API server, not the data: the loop backs off and retries
        except Exception as error:  # a missing folder, an unreachable store: say so, retry
            message = f"listing {recipe.data.uri}: {type(error).__name__}: {error}"
            log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)
            return replace(observed, scan_error=message)
        with self._lock:
            self._checked[ctx.uid] = observed.now
        return replace(observed, scan=found)

    # -- write ----------------------------------------------------------------------------

    def _create(
        self, ctx: builders.UpdateContext, observed: Observed, plan: UpdatePlan
    ) -> UpdatePlan:
        """Create the child the plan asks for; a refusal (invalid, forbidden) fails the run."""
        run = observed.status.current_run
        assert run is not None
        sequence = observed.status.runs
        if plan.create == "TrainingJob":
            manifest, kind = builders.training_job(ctx, sequence, run.base_version), "TrainingJob"
        else:
            assert run.candidate_version is not None
            manifest = builders.evaluation_job(
                ctx, sequence, run.candidate_version, run.base_version
            )
            kind = "Job"
        try:
            self.kube.request("POST", manifest_path(manifest), manifest)
        except ApiError as error:
            if error.conflict:  # created already (by us, before a restart): read it again
                return replace(plan, requeue_after=0.0)
            if error.status in _REFUSED:
                name = manifest["metadata"]["name"]
                message = f"could not create {kind} {name}: {error.message}"
                return plan_refused(observed, plan, message)
            raise
        self.metrics.api_writes.labels("create", kind).inc()
        return plan

    def _prune(self, namespace: str, name: str, uid: str, status: IncrementalUpdateStatus) -> None:
        """Remove the children of runs that fell out of the history (the versions stay)."""
        keep = {record.training_job for record in status.history}
        if status.current_run is not None:
            keep.add(status.current_run.training_job)
        keep_labels = {names.label_value(run) for run in keep}
        try:
            runs = self.kube.list(
                custom_path(GROUP, VERSION, "trainingjobs", namespace),
                names.runs_selector(name),
            )
            for job in runs:
                job_name = str(job["metadata"]["name"])
                if job_name not in keep and observe.owned_by(job, uid):
                    path = custom_path(GROUP, VERSION, "trainingjobs", namespace, job_name)
                    if self.kube.delete(path):
                        self.metrics.api_writes.labels("delete", "TrainingJob").inc()
            jobs_path = custom_path("batch", "v1", "jobs", namespace)
            for job in self.kube.list(jobs_path, names.evaluation_selector(name)):
                run_label = observe.labels(job).get(names.LABEL_RUN)
                if run_label not in keep_labels and observe.owned_by(job, uid):
                    job_name = str(job["metadata"]["name"])
                    if self.kube.delete(f"{jobs_path}/{job_name}"):
                        self.metrics.api_writes.labels("delete", "Job").inc()
        except ApiError as error:  # pruning is housekeeping: the next finished run retries
            log.warning("%s/%s: pruning old runs: %s", namespace, name, error)
