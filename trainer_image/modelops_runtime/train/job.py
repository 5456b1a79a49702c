"""One TrainingJob, end to end: data snapshot → plan → train (or search) → stored version.

The run (job, spec digest, data digest; see `runs`) scopes the checkpoints: only the same
run resumes them. A run whose version is already published reports it and trains
nothing. A new version is written aside and published create-only (see
`modelops_runtime.publish`); when its number went to another writer meanwhile, it takes
the next free one. Its snapshot lists the shards the run read, with the fingerprints the
run key was computed from.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from modelops.api.artifact import SnapshotManifest
from modelops.api.search import reported_metrics
from modelops.api.training import (
    Mode,
    ModelVersionRef,
    Task,
    TrainingJob,
    TrainingJobSpec,
)
from modelops.lifecycle.lineage import Origin
from modelops_runtime import artifacts, publish
from modelops_runtime.data import shards as shard_files
from modelops_runtime.data.pipeline import DataPlan, Part, ReadLog, Scaling, survey
from modelops_runtime.errors import MissingColumns
from modelops_runtime.evaluate import TRAINING_RECORD
from modelops_runtime.evaluate import data_plan as evaluation_plan
from modelops_runtime.train import checkpoint, pareto, progress, runs, versions, warmstart
from modelops_runtime.train.loop import EpochEnd, LoopConfig, run_in_process
from modelops_runtime.train.losses import check_loss, default_loss, output_width
from modelops_runtime.train.resources import threads_per_worker


@dataclass
class Prepared:
    """What the workers need, decided once by the driver."""

    spec: TrainingJobSpec
    run: runs.Run
    current: SnapshotManifest
    data: DataPlan
    shape: versions.Shape
    warm: warmstart.WarmStart | None
    survey_reads: list[str] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.run.job_id

    @property
    def root(self) -> str:
        return self.run.root


@dataclass
class JobResult:
    """The stored version and how it came about (an `Origin`, and why)."""

    ref: ModelVersionRef
    record: dict[str, Any]
    trials: list[dict[str, Any]]
    origin: Origin = Origin.TRAINED
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "trials": self.trials, "origin": {"how": self.origin.value, "why": self.reason}}


def _features(spec: TrainingJobSpec, columns: list[str]) -> list[str]:
    data = spec.data
    if data.sequence is not None:
        return [data.sequence.column]
    chosen = data.features or [c for c in columns if c != data.label]
    missing = [c for c in [*chosen, data.label] if c not in columns]
    if missing:
        raise MissingColumns(f"columns {missing} are not in the data (it has {columns[:20]})")
    return chosen


def _check(spec: TrainingJobSpec) -> None:
    task = spec.model.task
    check_loss(spec.training.loss or default_loss(task), task)
    if spec.data.sequence is not None and task == Task.CLASSIFICATION:
        raise ValueError("data.sequence windows forecast values; use task forecasting or regression")
    known = set(reported_metrics(task))
    for where, metric in (
        ("training.earlyStopping.metric", spec.training.early_stopping and spec.training.early_stopping.metric),
        ("search.metric", spec.search and spec.search.metric),
    ):
        if metric and metric not in known:
            raise ValueError(f"{where}: {metric} is not reported; choose one of {sorted(known)}")


def prepare(job: TrainingJob, run: runs.Run, current: SnapshotManifest) -> Prepared:
    spec = job.spec
    features = _features(spec, current.columns)
    task = spec.model.task
    base = DataPlan(
        uri=spec.data.uri,
        format=spec.data.format,
        shards=current.shards,
        features=features,
        label=spec.data.label,
        sequence=spec.data.sequence,
        task=task,
        validation_split=spec.data.validation_split,
        seed=spec.training.seed,
    )
    warm = None
    if spec.warm_start:
        # The parent is pinned at the run's first start: a resume reads the same shards.
        warm = warmstart.plan(spec, current, runs.read_pin(run).get("parent"))
        runs.write_pin(run, parent=warm.version)
    log = ReadLog()
    if warm is not None:
        if warm.card.features != features:
            raise ValueError(f"warm start: v{warm.version} was trained on features {warm.card.features[:10]}, not {features[:10]}")
        # The parent's scaling and classes stay: its weights were trained against them.
        scaling, classes = warm.scaling, warm.card.classes
        base = replace(base, shards=warm.shards)
    else:
        found = survey(base, log)
        scaling, classes = found.scaling, found.classes
        if task == Task.CLASSIFICATION and spec.model.num_classes:
            declared = [str(i) for i in range(spec.model.num_classes)]
            if not set(classes or []) <= set(declared):
                raise ValueError(f"labels {classes} do not fit model.numClasses={spec.model.num_classes}")
            classes = declared
    data = replace(base, scaling=scaling, classes=classes)
    layout = data.layout()
    loss = spec.training.loss or default_loss(task)
    horizon = spec.data.sequence.horizon if spec.data.sequence else 1
    shape = versions.Shape(
        task=task,
        features=features,
        n_features=layout.n_features,
        window=layout.window,
        n_outputs=output_width(loss, task, len(classes or []), horizon),
        classes=classes,
    )
    return Prepared(spec, run, current, data, shape, warm, sorted(log.paths))


def _loop_config(
    prepared: Prepared,
    spec: TrainingJobSpec,
    root: str,
    on_epoch_end: Callable[[EpochEnd], None] | None,
) -> LoopConfig:
    warm = prepared.warm
    return LoopConfig(
        job_id=prepared.job_id,
        model=spec.model,
        training=spec.training,
        data=prepared.data,
        n_inputs=prepared.shape.n_inputs(spec.model),
        n_outputs=prepared.shape.n_outputs,
        checkpoint_root=root,
        init_weights=warm.weights_uri if warm else None,
        lr_scale=warm.lr_scale if warm else 1.0,
        threads=threads_per_worker(spec.resources),
        # Asked for, not probed here: the driver may have no GPU while its workers do.
        use_gpu=spec.resources.gpus_per_worker > 0,
        on_epoch_end=on_epoch_end,
    )


def _final_weights(root: str, scaling: Scaling | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    epoch = checkpoint.latest_epoch(root)
    if epoch is None:
        raise RuntimeError(f"training left no checkpoint under {root}")
    state = checkpoint.load_state(root, epoch)
    if not state["finished"]:
        raise RuntimeError(f"training stopped after epoch {epoch} of an unfinished run")
    tensors = {f"model.{k}": v for k, v in checkpoint.load_model(root, epoch).items()}
    if scaling is not None:
        tensors.update(scaling.tensors())
    return tensors, state


def _evaluation(prepared: Prepared) -> tuple[DataPlan, Part]:
    """Holdout shards when the job names them, else the validation split of the shards read."""
    spec = prepared.spec
    if spec.data.holdout_uri:
        card = versions.make_card(spec.output.model_name, 1, prepared.shape, spec.model)
        return evaluation_plan(card, spec.data.holdout_uri, spec.data.format, spec.data.label), "all"
    return replace(prepared.data, scaling=None), "validation"


def _shards_read(prepared: Prepared, states: list[dict[str, Any]]) -> set[str]:
    return set(prepared.survey_reads).union(*(state["shards_read"] for state in states))


def trained_snapshot(prepared: Prepared, read: set[str]) -> SnapshotManifest:
    """The shards the weights were trained on, with the fingerprints the run was keyed by.

    A warm start's weights also carry what its parent was trained on: the shards
    unchanged since the parent stay listed, so the next delta is computed against
    everything the weights saw (a shard that changed was read again, or is not listed).
    """
    inherited = {s.path for s in prepared.warm.delta.unchanged} if prepared.warm else set()
    shards = [s for s in prepared.current.shards if s.path in read | inherited]
    return prepared.current.model_copy(update={"shards": shards})


def _record(prepared: Prepared, version: int, state: dict[str, Any], read: set[str], **extra: Any) -> dict[str, Any]:
    warm = prepared.warm
    spec = prepared.spec
    record: dict[str, Any] = {
        "jobId": prepared.job_id,
        "run": prepared.run.owner(),
        "version": version,
        "parent": warm.version if warm else None,
        "dataUri": spec.data.uri,
        "label": spec.data.label,
        "features": prepared.shape.features,
        "trainedOn": [s.path for s in prepared.data.shards],
        "shardsRead": sorted(read),
        "epochs": state["history"],
        "attempts": 1 + max((h["attempt"] for h in state["history"]), default=0),
        "stoppedEarly": state["stopped_early"],
        "evaluatedOn": spec.data.holdout_uri or "validation split",
    }
    if warm is not None:
        record["delta"] = {
            "new": [s.path for s in warm.delta.new],
            "changed": [s.path for s in warm.delta.changed],
            "deleted": [s.path for s in warm.delta.deleted],
            "replay": [s.path for s in warm.replay],
        }
    record.update(extra)
    return record


def _ensemble_weight(value: float | None, mode: Mode) -> float:
    if value is None or not math.isfinite(value):
        return 1.0
    return max(value, 1e-9) if mode == Mode.MAX else 1.0 / max(value, 1e-9)


def _stage(prepared: Prepared, folder: str, number: int, on_epoch_end: Callable[[EpochEnd], None] | None,
           progress_file: str, use_ray: bool) -> list[dict[str, Any]]:
    """Train (or search) and write the version into `folder`; returns the search's trials."""
    spec = prepared.spec
    name = spec.output.model_name
    evaluation = _evaluation(prepared)
    parent = prepared.warm.version if prepared.warm else None
    # Ray is imported only when used: an in-process run starts seconds faster without it.
    if spec.search is None:
        cfg = _loop_config(prepared, spec, prepared.root, on_epoch_end)
        if use_ray:
            from modelops_runtime.train import distributed

            distributed.run(cfg, spec.resources, spec.backoff_limit, progress_file)
        else:
            run_in_process(cfg, progress_file)
        tensors, state = _final_weights(prepared.root, prepared.data.scaling)
        read = _shards_read(prepared, [state])
        snapshot = trained_snapshot(prepared, read)
        card = versions.make_card(name, number, prepared.shape, spec.model, parent)
        versions.save_single(folder, card, tensors, prepared.shape, evaluation, snapshot, _record(prepared, number, state, read))
        return []

    from modelops_runtime.train import search

    found = search.run(
        spec,
        prepared.job_id,
        prepared.root,
        lambda trial_spec, root, _: _loop_config(prepared, trial_spec, root, on_epoch_end),
        progress_file,
    )
    trials = found.records()
    outcomes = found.ranked
    best = outcomes[0]
    goal = spec.search.goals()[0]
    search_info = {"search": {"metric": goal.metric, "mode": goal.mode.value, "best": best.id, "trials": trials,
                              "objectives": [g.to_dict() for g in spec.search.goals()]}}
    artifacts.write_json(artifacts.join(folder, "trials.json"), trials)
    top = outcomes[: spec.search.ensemble_top_k] if spec.search.ensemble_top_k >= 2 else []
    if not top:
        tensors, state = _final_weights(best.root, prepared.data.scaling)
        read = _shards_read(prepared, [state])
        snapshot = trained_snapshot(prepared, read)
        card = versions.make_card(name, number, prepared.shape, best.spec.model, parent)
        record = _record(prepared, number, state, read, **search_info)
        versions.save_single(folder, card, tensors, prepared.shape, evaluation, snapshot, record)
        return trials
    members, states = [], []
    for i, outcome in enumerate(top):
        tensors, state = _final_weights(outcome.root, prepared.data.scaling)
        states.append(state)
        member_card = versions.make_card(name, number, prepared.shape, outcome.spec.model, parent)
        member_folder = artifacts.join(folder, "members", str(i))
        record = _record(prepared, number, state, _shards_read(prepared, [state]), source=outcome.id)
        _, member = versions.save_single(member_folder, member_card, tensors, prepared.shape, evaluation, None, record)
        members.append(member)
    weights = [_ensemble_weight(o.metrics.get(goal.metric), goal.mode) for o in top]
    ensemble = versions.ensemble_card(spec.search.ensemble_method, [o.id for o in top], weights)
    card = versions.make_card(name, number, prepared.shape, None, parent, ensemble)
    read = _shards_read(prepared, states)
    snapshot = trained_snapshot(prepared, read)
    state = _final_weights(best.root, None)[1]
    versions.save_ensemble(folder, card, members, evaluation, snapshot, _record(prepared, number, state, read, **search_info))
    return trials


def _reused(run: runs.Run, store: str, name: str, version: int, progress_file: str) -> JobResult:
    folder = artifacts.version_uri(store, name, version)
    record: dict[str, Any] = artifacts.read_json(artifacts.join(folder, TRAINING_RECORD))
    metrics = artifacts.load_metrics(folder)
    epochs = len(record.get("epochs", []))
    progress.write(progress_file, progress.document(run.job_id, epochs, epochs, metrics, phase="finished"))
    ref = versions.reference(store, name, version, metrics, artifacts.load_snapshot(folder), artifacts.load_card(folder).parent)
    trials = list(record.get("search", {}).get("trials", []))
    why = f"job {run.job_id} already published it from the same spec and data; nothing was trained"
    return JobResult(ref=ref, record=record, trials=trials, origin=Origin.REUSED, reason=why)


def _how(prepared: Prepared, resumed_from: int | None, record: dict[str, Any]) -> tuple[Origin, str]:
    """Whether the run resumed or trained from the start, and why."""
    if resumed_from is not None:
        return Origin.RESUMED, f"continued from the epoch {resumed_from} checkpoint of an earlier attempt with the same spec and data"
    if record["attempts"] > 1:
        return Origin.RESUMED, f"a worker failed; attempt {record['attempts'] - 1} continued from the last checkpoint"
    spec = prepared.spec
    earlier = runs.earlier_runs(spec.output.store_uri, spec.output.model_name, prepared.run)
    why = "the spec or the data changed since an earlier run of this job" if earlier else "no earlier run of this job"
    if prepared.warm is not None:
        why += f"; warm-started from v{prepared.warm.version}"
    return Origin.TRAINED, why


def run(
    job: TrainingJob,
    job_id: str,
    *,
    version: int | None = None,
    progress_path: str | None = None,
    use_ray: bool = True,
    on_epoch_end: Callable[[EpochEnd], None] | None = None,
) -> JobResult:
    """The job's version: the one this run already published, else trained and published.

    `version` is the number the operator allocated; when another writer published it
    first, the version gets the next free number (the result says which).
    """
    spec = job.spec
    if spec.search is not None and not use_ray:
        raise ValueError("a search runs its trials on Ray Tune; it cannot run in-process")
    _check(spec)
    progress_file = progress_path or str(Path(tempfile.mkdtemp(prefix="modelops-progress-")) / "progress.json")
    store, name = spec.output.store_uri, spec.output.model_name
    current = shard_files.snapshot(spec.data.uri, spec.data.format)
    run_ = runs.scope(spec, job_id, current)
    done = runs.published(run_, store, name, version)
    if done is not None:
        return _reused(run_, store, name, done, progress_file)

    prepared = prepare(job, run_, current)
    resumed_from = checkpoint.latest_epoch(prepared.root) if spec.search is None else None
    pinned = runs.read_pin(run_).get("version")
    # The number this run tried before (it died publishing) stays its first choice.
    number = (pinned if isinstance(pinned, int) else None) or version or publish.next_number(store, name)
    staging = publish.stage_uri(store, name)
    try:
        trials = _stage(prepared, staging, number, on_epoch_end, progress_file, use_ray)
        number = runs.publish_version(run_, store, name, staging, number)
    finally:
        publish.discard(staging)
    # Read back from what was published: the version is the account of itself.
    folder = artifacts.version_uri(store, name, number)
    record = artifacts.read_json(artifacts.join(folder, TRAINING_RECORD))
    metrics, snapshot = artifacts.load_metrics(folder), artifacts.load_snapshot(folder)
    epochs = len(record["epochs"])
    final = progress.document(job_id, epochs, epochs, metrics, phase="finished", trials=trials or None)
    if trials:
        # The search's counts and its pick, as the progress document had them during the search.
        chosen = next(t for t in trials if t["id"] == record["search"]["best"])
        final["trialCounts"] = {s: sum(t["state"] == s for t in trials) for s in pareto.STATES}
        final["best"] = {"trial": chosen["id"], "metrics": chosen["metrics"]}
    last_epoch = checkpoint.latest_epoch(prepared.root)
    if last_epoch is not None:
        final["checkpoint"] = checkpoint.epoch_uri(prepared.root, last_epoch)
    progress.write(progress_file, final)
    parent = prepared.warm.version if prepared.warm else None
    origin, why = _how(prepared, resumed_from, record)
    ref = versions.reference(store, name, number, metrics, snapshot, parent)
    return JobResult(ref=ref, record=record, trials=trials, origin=origin, reason=why)
