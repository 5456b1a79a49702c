"""Hyperparameter search on Ray Tune: searcher, early-stopping scheduler, Pareto selection.

`search_space` turns spec.search into Tune's searcher (random or grid from the job's
seed, or Optuna's TPE) and scheduler (ASHA, HyperBand, median stopping; time counted in
epochs); `search_trial` is the trainable; `search_progress` keeps the progress document.
Concurrency is bounded by maxConcurrent and, for trials of several Ray Train workers
(which Tune's accounting does not see), by how many such trials the cluster's CPUs and
GPUs hold at once.

The Tune experiment lives in the store under the run's checkpoint root (`<root>/tune`).
A later attempt of the same run restores it (`Tuner.restore`, unfinished and errored
trials resumed): finished trials are not run again, and an interrupted trial resumes
from its own checkpoints.

The candidates for the stored version are the trials that finished (their last epoch,
or the loop's own early stopping); a trial the scheduler stopped is recorded as
stoppedEarly and not picked. With one objective they are ranked by it; with several,
the candidates are their Pareto front, in the order of the selection rule.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import pyarrow.fs
from ray import tune

from modelops.api.search import SearchAlgorithm, SearchSpec
from modelops.api.training import TrainingJobSpec
from modelops_runtime import artifacts, storage
from modelops_runtime.errors import InputError
from modelops_runtime.train import checkpoint, pareto, search_space, search_trial
from modelops_runtime.train.resources import quantity
from modelops_runtime.train.search_progress import SearchProgress, ended_state, reported
from modelops_runtime.train.search_trial import MakeConfig, apply_params

EXPERIMENT = "search"
STATE_SECONDS = 1
__all__ = ["SearchResult", "TrialOutcome", "apply_params", "run"]


@dataclass(frozen=True)
class TrialOutcome:
    """A trial as it ended: parameters, last metrics, state, and its checkpoints."""

    id: str
    params: dict[str, Any]
    spec: TrainingJobSpec
    root: str
    metrics: dict[str, float]
    status: str
    state: dict[str, Any] | None
    epochs: int

    @property
    def usable(self) -> bool:
        """Whether its weights are complete (it finished, maybe by the loop's early stop)."""
        return self.state is not None and bool(self.state["finished"])

    def record(self, on_front: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "params": {k: json.dumps(v) for k, v in self.params.items()},
            "metrics": self.metrics,
            "epochs": self.epochs,
            "state": self.status,
            "pareto": on_front,
        }


@dataclass(frozen=True)
class SearchResult:
    """Every trial, and the candidates for the stored version best first."""

    outcomes: list[TrialOutcome]
    ranked: list[TrialOutcome]
    multi_objective: bool

    def records(self) -> list[dict[str, Any]]:
        """Ranked candidates first, then the other trials."""
        front = self.ranked if self.multi_objective else self.ranked[:1]
        ids = {o.id for o in front}
        rest = [o for o in self.outcomes if o not in self.ranked]
        return [o.record(o.id in ids) for o in [*self.ranked, *rest]]


def rank(outcomes: list[TrialOutcome], search: SearchSpec) -> list[TrialOutcome]:
    """The usable trials best first: with several objectives, their Pareto front only."""
    goals = search.goals()
    usable = [o for o in outcomes if o.usable]

    def metrics(outcome: TrialOutcome) -> dict[str, float]:
        return outcome.metrics

    if len(goals) == 1:
        scored = [o for o in usable if pareto.complete(o.metrics, goals)]
        return pareto.order(scored, metrics, goals, None)
    return pareto.order(pareto.front(usable, metrics, goals), metrics, goals, search.select)


def _storage(job_root: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Where Tune keeps the experiment: the store, through its own filesystem settings."""
    uri = artifacts.join(job_root, "tune")
    fs, path = artifacts.filesystem(uri)
    if storage.protocol(uri) == "file":
        return path, None
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def _trial_resources(spec: TrainingJobSpec) -> dict[str, float]:
    search = spec.search
    assert search is not None
    if search.workers_per_trial > 1:
        # The trial only starts a TorchTrainer, whose workers reserve their own resources
        # (Tune refuses an empty request).
        return {"cpu": 0.01}
    out = {"cpu": quantity(spec.resources.cpus_per_worker)}
    if spec.resources.gpus_per_worker:
        out["gpu"] = float(spec.resources.gpus_per_worker)
    return out


def concurrency(spec: TrainingJobSpec, cluster: dict[str, float]) -> int:
    """maxConcurrent, lowered to the multi-worker trials the cluster's resources hold.

    A trial the whole cluster cannot hold would wait for its workers forever (nothing
    adds nodes to a job's Ray cluster), so that is an input error naming the field.
    Single-worker trials are placed by Tune itself, which needs no lower limit.
    """
    search = spec.search
    assert search is not None
    workers = search.workers_per_trial
    needs = {"CPU": quantity(spec.resources.cpus_per_worker) * workers}
    if spec.resources.gpus_per_worker:
        needs["GPU"] = float(spec.resources.gpus_per_worker * workers)
    limit = search.max_concurrent
    for resource, amount in needs.items():
        if amount <= 0:
            continue
        fits = math.floor(cluster.get(resource, 0.0) / amount + 1e-9)
        if fits < 1:
            raise InputError(
                f"search.workersPerTrial: a trial of {workers} workers needs {amount:g} {resource} "
                f"and the Ray cluster has {cluster.get(resource, 0.0):g}; on a cluster, "
                "resources.workers must be at least workersPerTrial"
            )
        if workers > 1:
            limit = min(limit, fits)
    return limit


def _tuner(
    spec: TrainingJobSpec, job_id: str, job_root: str, make_config: MakeConfig, progress_path: str
) -> tune.Tuner:
    import ray

    search = spec.search
    assert search is not None
    path, fs = _storage(job_root)
    trainable = tune.with_resources(
        tune.with_parameters(
            search_trial.run_trial, spec=spec, job_root=job_root, make_config=make_config
        ),
        _trial_resources(spec),
    )
    callback = SearchProgress(job_id, progress_path, search, spec.training.epochs)
    experiment = f"{path.rstrip('/')}/{EXPERIMENT}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        tuner = tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=search_space.param_space(search),
            storage_filesystem=fs,
        )
        # The restored run keeps its pickled callbacks; this attempt's progress file wins.
        assert tuner._local_tuner is not None
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [
            c for c in run_config.callbacks or [] if not isinstance(c, SearchProgress)
        ] + [callback]
        return tuner
    if not ray.is_initialized():
        ray.init()  # as Tune would, joining RAY_ADDRESS when set: the limit needs the cluster
    limit = concurrency(spec, ray.cluster_resources())
    return tune.Tuner(
        trainable,
        param_space=search_space.param_space(search),
        tune_config=tune.TuneConfig(
            num_samples=search_space.samples(search),
            search_alg=search_space.searcher(search, spec.training.seed, limit),
            scheduler=search_space.scheduler(search, spec.training.epochs),
            max_concurrent_trials=limit if search.algorithm == SearchAlgorithm.TPE else None,
            # A reused actor skips a fresh worker process (and torch import) per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=spec.backoff_limit),
            callbacks=[callback],
            verbose=0,
        ),
    )


def _outcome(spec: TrainingJobSpec, job_root: str, result: Any) -> TrialOutcome:
    search = spec.search
    assert search is not None
    last = result.metrics or {}
    # A trial that failed before its first report has no trial_id in its metrics.
    trial_id = str(last.get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1])
    params = search_space.point(search, result.config)
    root = search_trial.trial_root(job_root, trial_id)
    epoch = checkpoint.latest_epoch(root)
    state = checkpoint.load_state(root, epoch) if epoch is not None else None
    if result.error is not None:
        status = "failed"
    elif state is not None and state["finished"]:
        status = "stoppedEarly" if state["stopped_early"] else "finished"
    else:
        status = ended_state(int(last.get("epoch", 0)), spec.training.epochs)
    metrics = reported(last)
    if state is not None and state["finished"]:
        # The checkpoint's metrics are those of the weights kept; params comes from the report.
        metrics = {**metrics, **state["history"][-1]["metrics"]}
    # Epochs trained: the last report, or the checkpoint (its own count on a restored run).
    epochs = max(int(last.get("epoch", 0)), len(state["history"]) if state else 0)
    trial_spec = apply_params(spec, params)
    return TrialOutcome(trial_id, params, trial_spec, root, metrics, status, state, epochs)


def run(
    spec: TrainingJobSpec,
    job_id: str,
    job_root: str,
    make_config: MakeConfig,
    progress_path: str,
) -> SearchResult:
    """Run (or resume) the search; raises when no trial finished."""
    search = spec.search
    if search is None:
        raise ValueError("the job has no search")
    search_space.samples(search)  # a grid that does not match trials fails before Tune starts
    # Tune saves the experiment state at least every 10 s by default: a driver killed in
    # between would lose the trials finished since, and run them again.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SECONDS))
    results = _tuner(spec, job_id, job_root, make_config, progress_path).fit()
    outcomes = [_outcome(spec, job_root, results[i]) for i in range(len(results))]
    ranked = rank(outcomes, search)
    if not ranked:
        states = sorted(o.status for o in outcomes)
        raise RuntimeError(f"no search trial finished with every objective reported ({states})")
    return SearchResult(outcomes, ranked, len(search.goals()) > 1)
