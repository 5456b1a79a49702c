"""One TrainingJob, end to end: data snapshot → plan → train (or search) → stored version."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import (
    DataSnapshot,
    Mode,
    ModelVersionRef,
    Task,
    TrainingJob,
    TrainingJobSpec,
)
from modelops_runtime import artifacts
from modelops_runtime.data import shards as shard_files
from modelops_runtime.data.pipeline import DataPlan, Part, ReadLog, Scaling, survey
from modelops_runtime.evaluate import data_plan as evaluation_plan
from modelops_runtime.train import checkpoint, progress, versions, warmstart
from modelops_runtime.train.loop import EpochEnd, LoopConfig, run_in_process
from modelops_runtime.train.losses import check_loss, default_loss, output_width
from modelops_runtime.train.resources import threads_per_worker

_JOB = "job.json"


@dataclass
class Prepared:
    """What the workers need, decided once by the driver."""

    spec: TrainingJobSpec
    job_id: str
    root: str
    version: int
    current: SnapshotManifest
    data: DataPlan
    shape: versions.Shape
    warm: warmstart.WarmStart | None
    survey_reads: list[str] = field(default_factory=list)


@dataclass
class JobResult:
    """The stored version and how it came about."""

    ref: ModelVersionRef
    record: dict[str, Any]
    trials: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "trials": self.trials}


def _reserve_version(root: str, store: str, name: str, given: int | None) -> int:
    """The job's version: given by the operator, else allocated once and kept in job.json."""
    job_file = artifacts.join(root, _JOB)
    fs, path = artifacts.filesystem(job_file)
    if fs.exists(path):
        reserved = int(artifacts.read_json(job_file)["version"])
        if given is not None and given != reserved:
            raise ValueError(f"job checkpoints at {root} belong to version {reserved}, not {given}")
        return reserved
    version = given if given is not None else artifacts.allocate_version(store, name)
    artifacts.write_json(job_file, {"version": version})
    return version


def _features(spec: TrainingJobSpec, columns: list[str]) -> list[str]:
    data = spec.data
    if data.sequence is not None:
        return [data.sequence.column]
    chosen = data.features or [c for c in columns if c != data.label]
    missing = [c for c in [*chosen, data.label] if c not in columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the data (it has {columns[:20]})")
    return chosen


def _check(spec: TrainingJobSpec) -> None:
    task = spec.model.task
    check_loss(spec.training.loss or default_loss(task), task)
    if spec.data.sequence is not None and task == Task.CLASSIFICATION:
        raise ValueError("data.sequence windows forecast values; use task forecasting or regression")
    known = {"train_loss", "val_loss"} | (
        {"val_accuracy"} if task == Task.CLASSIFICATION else {"val_mse", "val_mae"}
    )
    for where, metric in (
        ("training.earlyStopping.metric", spec.training.early_stopping and spec.training.early_stopping.metric),
        ("search.metric", spec.search and spec.search.metric),
    ):
        if metric and metric not in known:
            raise ValueError(f"{where}: {metric} is not reported; choose one of {sorted(known)}")


def prepare(job: TrainingJob, job_id: str, version: int | None = None) -> Prepared:
    spec = job.spec
    _check(spec)
    store, name = spec.output.store_uri, spec.output.model_name
    root = checkpoint.job_root(store, name, job_id)
    reserved = _reserve_version(root, store, name, version)
    current = shard_files.snapshot(spec.data.uri, spec.data.format)
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
    warm = warmstart.plan(spec, current) if spec.warm_start else None
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
    return Prepared(spec, job_id, root, reserved, current, data, shape, warm, sorted(log.paths))


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
        card = versions.make_card(spec.output.model_name, prepared.version, prepared.shape, spec.model)
        return evaluation_plan(card, spec.data.holdout_uri, spec.data.format, spec.data.label), "all"
    return replace(prepared.data, scaling=None), "validation"


def _record(prepared: Prepared, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    warm = prepared.warm
    spec = prepared.spec
    record: dict[str, Any] = {
        "jobId": prepared.job_id,
        "version": prepared.version,
        "parent": warm.version if warm else None,
        "dataUri": spec.data.uri,
        "label": spec.data.label,
        "features": prepared.shape.features,
        "trainedOn": [s.path for s in prepared.data.shards],
        "shardsRead": sorted(set(prepared.survey_reads) | set(state["shards_read"])),
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


def run(
    job: TrainingJob,
    job_id: str,
    *,
    version: int | None = None,
    progress_path: str | None = None,
    use_ray: bool = True,
    on_epoch_end: Callable[[EpochEnd], None] | None = None,
) -> JobResult:
    """Train the job's version and store it; resumes from the job's checkpoints if any."""
    if job.spec.search is not None and not use_ray:
        raise ValueError("a search runs its trials on Ray Tune; it cannot run in-process")
    prepared = prepare(job, job_id, version)
    spec = prepared.spec
    progress_file = progress_path or str(Path(tempfile.mkdtemp(prefix="modelops-progress-")) / "progress.json")
    store, name = spec.output.store_uri, spec.output.model_name
    folder = artifacts.version_uri(store, name, prepared.version)
    evaluation = _evaluation(prepared)
    parent = prepared.warm.version if prepared.warm else None
    trials: list[dict[str, Any]] = []

    # Ray is imported only when used: an in-process run starts seconds faster without it.
    if spec.search is None:
        cfg = _loop_config(prepared, spec, prepared.root, on_epoch_end)
        if use_ray:
            from modelops_runtime.train import distributed

            distributed.run(cfg, spec.resources, spec.backoff_limit, progress_file)
        else:
            run_in_process(cfg, progress_file)
        tensors, state = _final_weights(prepared.root, prepared.data.scaling)
        card = versions.make_card(name, prepared.version, prepared.shape, spec.model, parent)
        metrics, _ = versions.save_single(folder, card, tensors, prepared.shape, evaluation, prepared.current, _record(prepared, state))
    else:
        from modelops_runtime.train import search

        outcomes = search.run(
            spec,
            job_id,
            prepared.root,
            lambda trial_spec, root, _: _loop_config(prepared, trial_spec, root, on_epoch_end),
            progress_file,
        )
        trials = [outcome.record() for outcome in outcomes]
        best = outcomes[0]
        search_info = {"search": {"metric": spec.search.metric, "mode": spec.search.mode.value, "best": best.id, "trials": trials}}
        artifacts.write_json(artifacts.join(folder, "trials.json"), trials)
        top = outcomes[: spec.search.ensemble_top_k] if spec.search.ensemble_top_k >= 2 else []
        if not top:
            tensors, state = _final_weights(best.root, prepared.data.scaling)
            card = versions.make_card(name, prepared.version, prepared.shape, best.spec.model, parent)
            record = _record(prepared, state, **search_info)
            metrics, _ = versions.save_single(folder, card, tensors, prepared.shape, evaluation, prepared.current, record)
        else:
            members = []
            for i, outcome in enumerate(top):
                tensors, state = _final_weights(outcome.root, prepared.data.scaling)
                member_card = versions.make_card(name, prepared.version, prepared.shape, outcome.spec.model, parent)
                member_folder = artifacts.join(folder, "members", str(i))
                record = _record(prepared, state, source=outcome.id)
                _, member = versions.save_single(member_folder, member_card, tensors, prepared.shape, evaluation, None, record)
                members.append(member)
            weights = [_ensemble_weight(o.metrics.get(spec.search.metric), spec.search.mode) for o in top]
            ensemble = versions.ensemble_card(spec.search.ensemble_method, [o.id for o in top], weights)
            card = versions.make_card(name, prepared.version, prepared.shape, None, parent, ensemble)
            state = _final_weights(best.root, None)[1]
            metrics = versions.save_ensemble(folder, card, members, evaluation, prepared.current, _record(prepared, state, **search_info))

    record = artifacts.read_json(artifacts.join(folder, "training.json"))
    epochs = len(record["epochs"])
    progress.write(progress_file, progress.document(job_id, epochs, epochs, metrics, phase="finished", trials=trials or None))
    ref = ModelVersionRef(
        name=name,
        version=prepared.version,
        uri=folder,
        metrics=metrics,
        data_snapshot=DataSnapshot(
            uri=artifacts.join(folder, artifacts.SNAPSHOT),
            shards=len(prepared.current.shards),
            rows=prepared.current.rows,
            digest=shard_files.digest(prepared.current),
        ),
        parent_version=parent,
    )
    return JobResult(ref=ref, record=record, trials=trials)
