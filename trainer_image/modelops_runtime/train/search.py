"""Hyperparameter search on Ray Tune.

Trial parameters are drawn up front from the job's seed (so a rerun tries the same
points) and handed to Tune as a grid over trial indices; Tune runs them with the
concurrency limit, each trial running the training loop in its own actor with its own
checkpoints under `<job checkpoints>/trials/<i>/`. A trial is one worker with the
job's per-worker resources (cpusPerWorker, gpusPerWorker); `workers` applies to
training without search. Trials are ranked by their last reported value of the
search metric.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from ray import tune

from modelops.api.training import Mode, ParamType, SearchParameter, SearchSpec, TrainingJobSpec
from modelops_runtime import artifacts
from modelops_runtime.train import checkpoint, loop, progress
from modelops_runtime.train.comm import Comm
from modelops_runtime.train.resources import quantity


def sample_space(space: list[SearchParameter], trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` points of the space, each a {path: value}; integer ranges include `high`."""
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(trials):
        point: dict[str, Any] = {}
        for param in space:
            if param.type == ParamType.CHOICE:
                point[param.path] = yaml.safe_load(str(rng.choice(param.values or [])))
                continue
            low, high = float(param.low or 0.0), float(param.high or 0.0)
            if param.type == ParamType.UNIFORM:
                point[param.path] = float(rng.uniform(low, high))
            elif param.type == ParamType.LOG_UNIFORM:
                point[param.path] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                point[param.path] = int(rng.integers(math.ceil(low), math.floor(high) + 1))
        points.append(point)
    return points


def apply_params(spec: TrainingJobSpec, point: dict[str, Any]) -> TrainingJobSpec:
    """A copy of `spec` with each camelCase path set, validated like a manifest."""
    wire = spec.to_dict()
    for path, value in point.items():
        *parents, leaf = path.split(".")
        node = wire
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainingJobSpec.model_validate(wire)


@dataclass(frozen=True)
class TrialOutcome:
    """A finished trial: its parameters, final metrics and where its checkpoints are."""

    index: int
    params: dict[str, Any]
    spec: TrainingJobSpec
    root: str
    metrics: dict[str, float]
    state: dict[str, Any]

    @property
    def id(self) -> str:
        return f"trial-{self.index}"

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "params": {k: json.dumps(v) for k, v in self.params.items()},
            "metrics": self.metrics,
            "epochs": len(self.state["history"]),
        }


def rank(outcomes: list[TrialOutcome], search: SearchSpec) -> list[TrialOutcome]:
    """Best first; a trial without the metric ranks last."""
    worst = math.inf if search.mode == Mode.MIN else -math.inf

    def value(outcome: TrialOutcome) -> float:
        return outcome.metrics.get(search.metric, worst)

    return sorted(outcomes, key=value, reverse=search.mode == Mode.MAX)


class _Progress(tune.Callback):  # type: ignore[misc]
    """The search's progress document: epochs done over all trials, the best metric so far."""

    def __init__(self, job_id: str, path: str, search: SearchSpec, params: list[dict[str, Any]], epochs: int) -> None:
        self.job_id, self.path, self.search, self.epochs = job_id, path, search, epochs
        self.trials: dict[int, dict[str, Any]] = {
            i: {"id": f"trial-{i}", "params": {k: json.dumps(v) for k, v in p.items()}, "epoch": 0, "metrics": {}}
            for i, p in enumerate(params)
        }

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        index = int(trial.config["trial"])
        self.trials[index]["epoch"] = int(result["epoch"])
        self.trials[index]["metrics"] = {k: float(v) for k, v in result.items() if k.startswith(("val_", "train_"))}
        values = [t["metrics"][self.search.metric] for t in self.trials.values() if self.search.metric in t["metrics"]]
        best = (min if self.search.mode == Mode.MIN else max)(values) if values else None
        progress.write(
            self.path,
            progress.document(
                self.job_id,
                epoch=sum(t["epoch"] for t in self.trials.values()),
                total_epochs=self.epochs * len(self.trials),
                metrics={self.search.metric: best} if best is not None else {},
                phase="search",
                trials=list(self.trials.values()),
            ),
        )


def _trial(config: dict[str, Any], configs: list[loop.LoopConfig]) -> None:
    cfg = configs[config["trial"]]
    loop.run(cfg, Comm.alone(cfg.use_gpu), tune.report)


def run(
    spec: TrainingJobSpec,
    job_id: str,
    job_root: str,
    make_config: Callable[[TrainingJobSpec, str, int], loop.LoopConfig],
    progress_path: str,
    storage_path: str | None = None,
) -> list[TrialOutcome]:
    """Run every trial; returns the finished ones, best first."""
    search = spec.search
    if search is None:
        raise ValueError("the job has no search")
    points = sample_space(search.space, search.trials, spec.training.seed)
    specs = [apply_params(spec, point) for point in points]
    roots = [artifacts.join(job_root, "trials", str(i)) for i in range(len(specs))]
    configs = [make_config(trial_spec, root, i) for i, (trial_spec, root) in enumerate(zip(specs, roots, strict=True))]
    resources: dict[str, float] = {"cpu": quantity(spec.resources.cpus_per_worker)}
    if spec.resources.gpus_per_worker:
        resources["gpu"] = float(spec.resources.gpus_per_worker)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, configs=configs), resources),
        param_space={"trial": tune.grid_search(list(range(len(configs))))},
        # Reused actors skip a fresh worker process (and torch import) per trial.
        tune_config=tune.TuneConfig(max_concurrent_trials=search.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"modelops-{job_id}",
            storage_path=storage_path or tempfile.mkdtemp(prefix="modelops-tune-"),
            failure_config=tune.FailureConfig(max_failures=spec.backoff_limit),
            callbacks=[_Progress(job_id, progress_path, search, points, spec.training.epochs)],
            verbose=0,
        ),
    )
    tuner.fit()
    outcomes = []
    for i, root in enumerate(roots):
        epoch = checkpoint.latest_epoch(root)
        if epoch is None:
            continue
        state = checkpoint.load_state(root, epoch)
        if not state["finished"]:
            continue
        outcomes.append(TrialOutcome(i, points[i], specs[i], root, state["history"][-1]["metrics"], state))
    if not outcomes:
        raise RuntimeError("every search trial failed")
    return rank(outcomes, search)
