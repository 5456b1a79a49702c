"""One reconcile of one IncrementalUpdate: read, decide (modelops.lifecycle), write.

Synchronous on purpose: it runs on a worker thread, so neither the blocking client nor
the dataset listing (file or object-store I/O, hashing new shards) stalls Kopf's event
loop. Everything derives from what is stored and observed, so a restarted operator
carries on where the last one stopped:

- `status.currentRun` names the run in flight; it is written (with `status.runs`, the
  run counter) before the child TrainingJob exists, and the child is created under the
  deterministic name `<update>-run-<n>` on the next pass, so a crash in between makes
  no duplicate and loses no run;
- once the child has Succeeded, the candidate version and the evaluation Job's name
  are written, then the Job is created, again under a deterministic name;
- the evaluation pod's termination message carries both versions' metrics; the gate
  (`decide_promotion`) turns them into Promoted or Rejected, recorded in the history
  with the delta and both metrics, in the same status write that clears the run.

Promotions live in this object's status (`promotedVersion`, `promotedVersions`): the
ModelDeployment controller reads them through a Kopf index, and never takes a child
TrainingJob's version (labelled `modelops.dev/update`) as promoted by itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from modelops.api.artifact import SnapshotManifest
from modelops.api.base import GROUP, VERSION
from modelops.api.training import DataFormat, TrainingJobSpec
from modelops.api.update import (
    CurrentRun,
    DataDelta,
    IncrementalUpdateSpec,
    IncrementalUpdateStatus,
    RunRecord,
    SnapshotSummary,
    UpdatePhase,
)
from modelops.api.validation import problems_from_error
from modelops.k8s.incrementalupdate import builders, names
from modelops.k8s.kube import ApiError, Kube, custom_path, namespaced_path
from modelops.k8s.metrics import OperatorMetrics
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.delta import compute_delta, schema_problem
from modelops.lifecycle.promotion import decide_promotion
from modelops.lifecycle.status import status_changed, status_patch
from modelops.lifecycle.training import EventNote
from modelops.lifecycle.training_report import snapshot_summary
from modelops.lifecycle.update import already_tried, record_run, should_start_run

log = logging.getLogger(__name__)

RESOURCE = names.PLURAL
Body = dict[str, Any]
Clock = Callable[[], datetime]
Decision = Literal["Promoted", "Rejected", "Failed"]

READY = "Ready"
UPDATING = "Updating"
LAST_RUN_PROMOTED = "LastRunPromoted"
DEGRADED = "Degraded"

# A write that the next pass depends on (a run recorded, a candidate noted): come back
# at once, so the child is created right after its record is stored.
NEXT_PASS = 0.0
DELETING_RETRY_SECONDS = 2.0
# API errors that no retry will cure: the child is refused as it is.
_REFUSED = frozenset({400, 403, 422})


def utc_now() -> datetime:
    # Whole seconds, as Kubernetes writes its own timestamps.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class UpdateSettings:
    """How the controller behaves, beyond what each update's spec says."""

    evaluation: builders.EvaluationSettings
    resync_seconds: float = 300.0
    workers: int = 4


@dataclass(frozen=True)
class Outcome:
    """What the control loop needs after a reconcile."""

    events: tuple[EventNote, ...] = ()
    requeue_after: float | None = None
    generation: int | None = None


class StatusConflict(Exception):
    """The update changed between our read and our status write; reconcile again."""


# --------------------------------------------------------------------------------------
# The data: listing, stored snapshots, shard schemas
# --------------------------------------------------------------------------------------


class DataSource(Protocol):
    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest: ...

    def stored_snapshot(self, store: str, model: str, version: int) -> SnapshotManifest | None: ...

    def columns(self, uri: str, fmt: DataFormat) -> list[str]: ...


Stamp = tuple[Any, Any]


def _stamp(entry: Mapping[str, Any]) -> Stamp | None:
    """What says a file is unchanged without reading it: size and mtime (or ETag)."""
    marker = entry.get("mtime") or entry.get("LastModified") or entry.get("ETag")
    marker = marker or entry.get("etag") or entry.get("md5Hash") or entry.get("updated")
    if marker is None:
        return None
    return (entry.get("size"), str(marker))


class RuntimeData:
    """The runtime's shard listing and snapshots (its imports are heavy: taken when used).

    A shard is hashed once: later listings reuse its fingerprint while its size and
    modification time (or ETag) stay the same, so a period's listing of a large dataset
    costs one directory listing plus the hashing of new or rewritten shards.
    """

    def __init__(self) -> None:
        self._fingerprints: dict[tuple[str, str], tuple[Stamp, Any]] = {}
        self._lock = threading.Lock()

    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest:
        from modelops_runtime import artifacts
        from modelops_runtime.data.readers import read_columns
        from modelops_runtime.data.shards import SUFFIXES, fingerprint, shard_uri

        fs, root = artifacts.filesystem(uri)
        if not fs.isdir(root):
            raise FileNotFoundError(f"dataset {uri} is not a folder")
        stamps: dict[str, Stamp | None] = {}
        for entry in fs.ls(root, detail=True):
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "file" and name.endswith(SUFFIXES[fmt]):
                stamps[name] = _stamp(entry)
        if not stamps:
            raise FileNotFoundError(f"dataset {uri} has no {fmt.value} shards")
        shards = []
        for path in sorted(stamps):
            stamp, key = stamps[path], (uri, path)
            with self._lock:
                known = self._fingerprints.get(key)
            if stamp is not None and known is not None and known[0] == stamp:
                shards.append(known[1])
                continue
            shard = fingerprint(uri, path, fmt)
            shards.append(shard)
            if stamp is not None:
                with self._lock:
                    self._fingerprints[key] = (stamp, shard)
        with self._lock:  # forget deleted shards: the cache never outgrows the listing
            for key in [k for k in self._fingerprints if k[0] == uri and k[1] not in stamps]:
                del self._fingerprints[key]
        columns = read_columns(shard_uri(uri, shards[0].path), fmt)
        return SnapshotManifest(uri=uri, format=fmt.value, shards=shards, columns=columns)

    def stored_snapshot(self, store: str, model: str, version: int) -> SnapshotManifest | None:
        from modelops_runtime import artifacts

        snapshot: SnapshotManifest | None = artifacts.load_snapshot(
            artifacts.version_uri(store, model, version)
        )
        return snapshot

    def columns(self, uri: str, fmt: DataFormat) -> list[str]:
        from modelops_runtime.data.readers import read_columns

        columns: list[str] = read_columns(uri, fmt)
        return columns


# --------------------------------------------------------------------------------------
# Reading what is observed (pure)
# --------------------------------------------------------------------------------------


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    return labels


def owned_by(body: Mapping[str, Any], uid: str) -> bool:
    refs = (body.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def serving_version(
    trainingjobs: list[Body], model: str, status: IncrementalUpdateStatus
) -> int | None:
    """The newest promoted version of `model`: what a ModelDeployment of `latest` serves.

    Promoted are the versions this update's gate let through, and those of Succeeded
    TrainingJobs of the model that are not update runs (their own completion promotes
    them, as the ModelDeployment controller counts them).
    """
    promoted = set(status.promoted_versions)
    if status.promoted_version is not None:
        promoted.add(status.promoted_version)
    for job in trainingjobs:
        if names.LABEL_UPDATE in _labels(job):
            continue
        spec, observed = job.get("spec") or {}, job.get("status") or {}
        produced = observed.get("modelVersion") or {}
        if (spec.get("output") or {}).get("modelName") != model:
            continue
        if observed.get("phase") == "Succeeded" and produced.get("version"):
            promoted.add(int(produced["version"]))
    return max(promoted, default=None)


@dataclass(frozen=True)
class Comparison:
    """What `modelops_runtime compare` reports: each version's metrics on the same data."""

    candidate: dict[str, float]
    current: dict[str, float] | None


def parse_comparison(message: str | None) -> Comparison | None:
    """The comparison in a termination message; None when absent or malformed."""
    if not message:
        return None
    try:
        raw = json.loads(message)
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("candidate"), dict):
        return None

    def numbers(value: Any) -> dict[str, float]:
        return {
            str(k): float(v)
            for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }

    current = raw.get("current")
    return Comparison(
        candidate=numbers(raw["candidate"]),
        current=numbers(current) if isinstance(current, dict) else None,
    )


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        if container.get("name") == builders.EVALUATION_CONTAINER:
            terminated = (container.get("state") or {}).get("terminated")
            if isinstance(terminated, Mapping):
                return terminated
    return {}


@dataclass(frozen=True)
class Evaluation:
    """Where the evaluation stands: a result, a failure, or neither yet."""

    result: Comparison | None = None
    failure: str | None = None


def _tail(text: str, limit: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= limit else f"...{text[-limit:]}"


def evaluation_state(job: Mapping[str, Any] | None, pods: list[Body]) -> Evaluation:
    """The outcome the evaluation Job and its pods show."""
    finished = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    for pod in finished:
        result = parse_comparison(_terminated(pod).get("message"))
        if result is not None:
            return Evaluation(result=result)
    if finished:
        name = (finished[0].get("metadata") or {}).get("name", "")
        message = _terminated(finished[0]).get("message") or ""
        return Evaluation(
            failure=f"pod {name} finished without a comparison: {_tail(message) or 'no message'}"
        )
    conditions = ((job or {}).get("status") or {}).get("conditions") or ()
    failed = next(
        (c for c in conditions if c.get("type") == "Failed" and c.get("status") == "True"), None
    )
    if failed is None:
        return Evaluation()
    detail = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
    crashed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if crashed:
        message = _terminated(crashed[-1]).get("message") or ""
        if message:
            detail = f"{detail}; {_tail(message)}"
    return Evaluation(failure=detail)


def _parse_status(raw: dict[str, Any]) -> IncrementalUpdateStatus:
    """The stored status; a status this version cannot read starts over from observation."""
    try:
        return IncrementalUpdateStatus.model_validate(raw)
    except ValidationError:
        return IncrementalUpdateStatus()


# --------------------------------------------------------------------------------------
# The reconcile
# --------------------------------------------------------------------------------------


@dataclass
class _Draft:
    """The status being computed, with the events to post after it is written."""

    status: IncrementalUpdateStatus
    now: datetime
    generation: int | None
    events: list[EventNote] = field(default_factory=list)
    prune: bool = False  # a run finished: remove children past the history, once written

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, ok, reason, message[:32768], self.now, self.generation
        )

    def say(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventNote(type_, reason, message[:1024]))

    def not_ready(self, reason: str, message: str) -> None:
        """Ready False; a Warning event only when the reason or message is new."""
        previous = next((c for c in self.status.conditions if c.type == READY), None)
        if previous is None or (previous.reason, previous.message) != (reason, message):
            self.say("Warning", reason, message)
        self.condition(READY, False, reason, message)


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: UpdateSettings,
        metrics: OperatorMetrics,
        data: DataSource | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.data: DataSource = data or RuntimeData()
        self.clock = clock
        # Per update uid: when its data was last listed. The status keeps the time of the
        # last listing that changed something (observedAt alone never justifies a write),
        # which stands in after a restart.
        self._checked: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def forget(self, uid: str) -> None:
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
        try:
            update = self.kube.get(path)  # fresh: the watch may lag our own last write
        except ApiError as error:
            if error.not_found:
                return Outcome()
            raise
        meta = update["metadata"]
        if meta.get("deletionTimestamp"):
            return Outcome()  # the garbage collector removes the children
        generation = meta.get("generation")
        raw_status: dict[str, Any] = update.get("status") or {}
        draft = _Draft(_parse_status(raw_status).model_copy(deep=True), self.clock(), generation)
        requeue = self._plan(namespace, name, str(meta["uid"]), update, draft)
        draft.status.observed_generation = generation
        self._write_status(path, meta, raw_status, draft.status)
        if draft.prune:
            self._prune(namespace, name, str(meta["uid"]), draft.status)
        return Outcome(events=tuple(draft.events), requeue_after=requeue, generation=generation)

    def _plan(
        self, namespace: str, name: str, uid: str, update: Body, draft: _Draft
    ) -> float | None:
        try:
            spec = IncrementalUpdateSpec.model_validate(update.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            return self._blocked(draft, "InvalidSpec", problems, None)
        jobs = self.kube.list(custom_path(GROUP, VERSION, "trainingjobs", namespace))
        by_name = {str(j["metadata"]["name"]): j for j in jobs}
        ref = spec.training_job_ref.name
        recipe_body = by_name.get(ref)
        if recipe_body is None:
            return self._blocked(draft, "TrainingJobNotFound", f"TrainingJob {ref} not found", spec)
        try:
            recipe = TrainingJobSpec.model_validate(recipe_body.get("spec") or {})
        except ValidationError as error:
            problems = "; ".join(str(p) for p in problems_from_error(error, ("spec",)))
            return self._blocked(
                draft, "InvalidTrainingJob", f"TrainingJob {ref}: {problems}", spec
            )
        ctx = builders.UpdateContext(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            recipe=recipe,
            settings=self.settings.evaluation,
        )
        draft.status.model_name = ctx.model
        finished = False
        if draft.status.current_run is not None:
            requeue = self._advance(ctx, draft, by_name)
            if draft.status.current_run is not None:
                return requeue
            finished = True
        changed = draft.status.observed_generation != draft.generation
        serving = serving_version(jobs, ctx.model, draft.status)
        return self._watch(ctx, draft, serving, force=finished or changed)

    def _blocked(
        self, draft: _Draft, reason: str, message: str, spec: IncrementalUpdateSpec | None
    ) -> float | None:
        """The update cannot watch: say why, and look again later (its spec may change)."""
        draft.not_ready(reason, message)
        if draft.status.current_run is None:
            draft.status.phase = UpdatePhase.FAILED
        return float(spec.detect.interval_seconds) if spec else None

    # -- watching the data ----------------------------------------------------------------

    def _due_in(
        self, spec: IncrementalUpdateSpec, last_check: datetime | None, now: datetime
    ) -> float:
        if last_check is None:
            return 0.0
        elapsed = (now - last_check).total_seconds()
        return max(0.0, spec.detect.interval_seconds - elapsed)

    def _watch(
        self,
        ctx: builders.UpdateContext,
        draft: _Draft,
        serving: int | None,
        force: bool,
    ) -> float | None:
        spec, status, now = ctx.spec, draft.status, draft.now
        interval = float(spec.detect.interval_seconds)
        status.phase = UpdatePhase.IDLE
        draft.condition(UPDATING, False, "Idle", "no update run in flight")
        last_check = self._last_check(ctx.uid, status)
        wait = self._due_in(spec, last_check, now)
        if wait > 0 and not force:
            return wait
        data = ctx.recipe.data
        try:
            listing = self.data.listing(data.uri, data.format)
            baseline = (
                self.data.stored_snapshot(ctx.store, ctx.model, serving)
                if serving is not None
                else None
            )
        except Exception as error:  # a missing folder, an unreachable store: say so, retry
            message = f"listing {data.uri}: {type(error).__name__}: {error}"
            log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)
            draft.not_ready("DataUnavailable", message)
            return interval
        delta = compute_delta(baseline, listing)
        pending = DataDelta(
            new_shards=len(delta.new),
            changed_shards=len(delta.changed),
            deleted_shards=len(delta.deleted),
            new_rows=delta.fresh_rows,
        )
        digest = snapshot_summary(listing, data.uri).digest
        with self._lock:
            self._checked[ctx.uid] = now
        status.pending_delta = pending
        status.last_snapshot = SnapshotSummary(
            shards=len(listing.shards), rows=listing.rows, digest=digest, observed_at=now
        )
        decision = should_start_run(spec, status, pending, now, last_check, serving)
        reason = decision.reason
        if decision.start and (tried := already_tried(status, digest)) is not None:
            reason = f"the last run ({tried.training_job}) on this data was {tried.decision}; waiting for new data"
        elif decision.start:
            problem = self._schema_problem(ctx, baseline, listing, [s.path for s in delta.fresh])
            self._start(ctx, draft, pending, serving, digest, announce=problem is None)
            if problem is None:
                return NEXT_PASS
            # Checked before any child exists: the run is recorded as failed, naming the
            # column, and the next one waits for the data to change.
            self._finish(ctx, draft, "Failed", problem, cause="SchemaChanged")
            reason = f"the last run failed: {problem}"
        if serving is None:
            draft.condition(
                READY,
                False,
                "WaitingForBaseline",
                f"no promoted version of model {ctx.model} yet "
                f"(TrainingJob {spec.training_job_ref.name} has not succeeded)",
            )
        else:
            shards = pending.new_shards + pending.changed_shards
            draft.condition(
                READY,
                True,
                "Watching",
                f"serving version {serving}; {shards} new or changed shard(s), "
                f"{pending.new_rows} row(s) pending: {reason}",
            )
        return interval

    def _schema_problem(
        self,
        ctx: builders.UpdateContext,
        baseline: SnapshotManifest | None,
        listing: SnapshotManifest,
        fresh: list[str],
    ) -> str | None:
        """Checked before a run starts: a new shard whose columns differ fails the run."""
        data = ctx.recipe.data
        expected = (
            baseline.columns if baseline is not None and baseline.columns else listing.columns
        )
        for path in fresh:
            uri = f"{data.uri.rstrip('/')}/{path}"
            try:
                found = self.data.columns(uri, data.format)
            except Exception as error:
                return f"shard {path} cannot be read: {type(error).__name__}: {error}"
            problem = schema_problem(expected, found, path)
            if problem is not None:
                return problem
        return None

    def _start(
        self,
        ctx: builders.UpdateContext,
        draft: _Draft,
        delta: DataDelta,
        serving: int | None,
        digest: str,
        announce: bool = True,
    ) -> str:
        """Record the run; its TrainingJob is created on the next pass, after this is stored."""
        status = draft.status
        status.runs += 1
        run = names.training_job(ctx.name, status.runs)
        status.current_run = CurrentRun(
            training_job=run,
            started_at=draft.now,
            delta=delta,
            base_version=serving,
            snapshot_digest=digest,
        )
        status.phase = UpdatePhase.TRAINING
        shards = f"{delta.new_shards} new, {delta.changed_shards} changed shard(s)"
        base = f"from version {serving}" if serving is not None else "from scratch"
        message = f"{run}: {shards}, {delta.new_rows} row(s); training {base}"
        if announce:
            draft.condition(READY, True, "Training", message)
            draft.condition(UPDATING, True, "Training", message)
            draft.say("Normal", "UpdateStarted", message)
        return run

    # -- the run in flight ----------------------------------------------------------------

    def _advance(
        self, ctx: builders.UpdateContext, draft: _Draft, by_name: dict[str, Body]
    ) -> float | None:
        status = draft.status
        run = status.current_run
        assert run is not None
        sequence = status.runs
        child = by_name.get(run.training_job)
        if child is not None and not owned_by(child, ctx.uid):
            if (child.get("metadata") or {}).get("deletionTimestamp"):
                return DELETING_RETRY_SECONDS  # a former update's child, on its way out
            self._finish(
                ctx,
                draft,
                "Failed",
                f"TrainingJob {run.training_job} exists and is not this update's run",
                cause="NameTaken",
            )
            return None
        if child is None and run.candidate_version is None:
            manifest = builders.training_job(ctx, sequence, run.base_version)
            return self._create(ctx, draft, manifest, "TrainingJob")
        observed = (child or {}).get("status") or {}
        phase = observed.get("phase")
        if child is not None and phase == "Failed":
            message = observed.get("message") or "training failed"
            self._finish(
                ctx,
                draft,
                "Failed",
                f"{run.training_job} failed: {message}",
                cause="TrainingFailed",
            )
            return None
        if child is not None and phase != "Succeeded":
            message = f"{run.training_job}: {phase or 'Pending'}" + (
                f", {observed['message']}" if observed.get("message") else ""
            )
            status.phase = UpdatePhase.TRAINING
            draft.condition(READY, True, "Training", message)
            draft.condition(UPDATING, True, "Training", message)
            return None
        if run.candidate_version is None or run.evaluation_job is None:
            produced = observed.get("modelVersion") or {}
            if not produced.get("version"):
                self._finish(
                    ctx,
                    draft,
                    "Failed",
                    f"{run.training_job} succeeded without a model version",
                    cause="TrainingFailed",
                )
                return None
            run.candidate_version = int(produced["version"])
            run.evaluation_job = names.evaluation_job(ctx.name, sequence)
            status.phase = UpdatePhase.EVALUATING
            message = f"{run.evaluation_job}: version {run.candidate_version} against " + (
                f"version {run.base_version}" if run.base_version else "nothing serving"
            )
            draft.condition(READY, True, "Evaluating", message)
            draft.condition(UPDATING, True, "Evaluating", message)
            draft.say("Normal", "Evaluating", message)
            return NEXT_PASS
        return self._evaluate(ctx, draft, sequence)

    def _evaluate(self, ctx: builders.UpdateContext, draft: _Draft, sequence: int) -> float | None:
        run = draft.status.current_run
        assert run is not None and run.evaluation_job is not None
        assert run.candidate_version is not None
        draft.status.phase = UpdatePhase.EVALUATING
        job_path = custom_path("batch", "v1", "jobs", ctx.namespace, run.evaluation_job)
        job = self._get(job_path)
        if job is None:
            manifest = builders.evaluation_job(
                ctx, sequence, run.candidate_version, run.base_version
            )
            return self._create(ctx, draft, manifest, "Job")
        selector = (
            f"{names.evaluation_selector(ctx.name)},"
            f"{names.LABEL_RUN}={names.label_value(run.training_job)}"
        )
        pods = self.kube.list(namespaced_path("Pod", ctx.namespace), selector)
        state = evaluation_state(job, pods)
        if state.failure is not None:
            self._finish(
                ctx,
                draft,
                "Failed",
                f"evaluation of version {run.candidate_version} failed: {state.failure}",
                version=run.candidate_version,
                cause="EvaluationFailed",
            )
            return None
        if state.result is None:
            return None  # still running: its pod's events wake us
        self._gate(ctx, draft, state.result)
        return None

    def _gate(self, ctx: builders.UpdateContext, draft: _Draft, result: Comparison) -> None:
        status = draft.status
        run = status.current_run
        assert run is not None and run.candidate_version is not None
        promotion = ctx.spec.promotion
        candidate = result.candidate.get(promotion.metric)
        current = result.current.get(promotion.metric) if result.current else None
        verdict = decide_promotion(candidate, current, promotion)
        version = run.candidate_version
        reason = f"version {version}: {verdict.reason}"
        if verdict.promote:
            status.promoted_version = version
            kept = [v for v in status.promoted_versions if v != version]
            status.promoted_versions = [*kept, version][-ctx.spec.history_limit :]
        self._finish(
            ctx,
            draft,
            "Promoted" if verdict.promote else "Rejected",
            reason,
            version=version,
            candidate_metric=candidate,
            current_metric=current,
        )

    def _finish(
        self,
        ctx: builders.UpdateContext,
        draft: _Draft,
        decision: Decision,
        reason: str,
        *,
        version: int | None = None,
        candidate_metric: float | None = None,
        current_metric: float | None = None,
        cause: str | None = None,
    ) -> None:
        status = draft.status
        run = status.current_run
        assert run is not None
        record = RunRecord(
            training_job=run.training_job,
            version=version or run.candidate_version,
            delta=run.delta,
            current_version=run.base_version,
            candidate_metric=candidate_metric,
            current_metric=current_metric,
            decision=decision,
            reason=reason[:2048],
            finished_at=draft.now,
            snapshot_digest=run.snapshot_digest,
        )
        status.history = record_run(status, record, ctx.spec.history_limit)
        status.current_run = None
        status.last_result = decision
        status.phase = UpdatePhase.IDLE
        draft.condition(UPDATING, False, "Idle", f"{run.training_job} finished: {decision}")
        draft.condition(LAST_RUN_PROMOTED, decision == "Promoted", decision, reason)
        if decision == "Failed":
            draft.condition(DEGRADED, True, cause or "RunFailed", reason)
        else:
            draft.condition(DEGRADED, False, "LastRunCompleted", f"{run.training_job}: {decision}")
        draft.say("Normal" if decision == "Promoted" else "Warning", decision, reason)
        draft.prune = True

    # -- API calls ------------------------------------------------------------------------

    def _get(self, path: str) -> Body | None:
        try:
            return self.kube.get(path)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    def _create(
        self, ctx: builders.UpdateContext, draft: _Draft, manifest: Body, kind: str
    ) -> float | None:
        """Create a child recorded in status; a refusal (invalid, forbidden) fails the run."""
        path = _collection(manifest)
        try:
            self.kube.request("POST", path, manifest)
        except ApiError as error:
            if error.conflict:
                return NEXT_PASS  # created already (by us, before a restart): read it again
            if error.status in _REFUSED:
                name = manifest["metadata"]["name"]
                self._finish(
                    ctx,
                    draft,
                    "Failed",
                    f"could not create {kind} {name}: {error.message}",
                    cause="CreateFailed",
                )
                return None
            raise
        self.metrics.api_writes.labels("create", kind).inc()
        return None

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
                if job_name not in keep and owned_by(job, uid):
                    path = custom_path(GROUP, VERSION, "trainingjobs", namespace, job_name)
                    if self.kube.delete(path):
                        self.metrics.api_writes.labels("delete", "TrainingJob").inc()
            jobs_path = custom_path("batch", "v1", "jobs", namespace)
            for job in self.kube.list(jobs_path, names.evaluation_selector(name)):
                run_label = _labels(job).get(names.LABEL_RUN)
                if run_label not in keep_labels and owned_by(job, uid):
                    job_name = str(job["metadata"]["name"])
                    if self.kube.delete(f"{jobs_path}/{job_name}"):
                        self.metrics.api_writes.labels("delete", "Job").inc()
        except ApiError as error:  # pruning is housekeeping: the next finished run retries
            log.warning("%s/%s: pruning old runs: %s", namespace, name, error)

    def _write_status(
        self,
        path: str,
        meta: dict[str, Any],
        current: dict[str, Any],
        desired: IncrementalUpdateStatus,
    ) -> None:
        wanted = desired.to_dict()
        if not status_changed(_parse_status(current).to_dict(), wanted):
            return
        # The resourceVersion makes the write conditional: if the update changed since
        # our read, the API server refuses (409) instead of letting a stale decision win.
        body = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": status_patch(current, wanted),
        }
        try:
            self.kube.merge_patch(f"{path}/status", body)
        except ApiError as error:
            if error.conflict:
                raise StatusConflict(str(error)) from error
            raise
        self.metrics.api_writes.labels("patch", "IncrementalUpdateStatus").inc()


def _collection(manifest: Body) -> str:
    namespace = manifest["metadata"]["namespace"]
    if manifest["kind"] == "Job":
        return custom_path("batch", "v1", "jobs", namespace)
    return custom_path(GROUP, VERSION, "trainingjobs", namespace)
