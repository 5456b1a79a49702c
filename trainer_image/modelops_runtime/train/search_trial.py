"""One search trial, as Ray Tune runs it: the job's spec with the trial's point applied,
trained by the loop in the trial's own actor, or by a Ray Train TorchTrainer started from
the trial (several workers, DDP across them) whose reports reach Tune through
`TuneReportCallback` (Ray Train v2's Tune integration).

A trial's checkpoints live under `<job checkpoints>/trials/<trial id>/`; Tune keeps its
trial id across a restore, so a trial restarted after the driver died resumes from them.
The trial reports every epoch (the schedulers count epochs) and also its parameter count
as `params`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ray import tune

from modelops.api.training import TrainingJobSpec
from modelops_runtime import artifacts
from modelops_runtime.models import build_model
from modelops_runtime.train import loop, search_space
from modelops_runtime.train.comm import Comm

MakeConfig = Callable[[TrainingJobSpec, str, int], loop.LoopConfig]


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


def trial_root(job_root: str, trial_id: str) -> str:
    return artifacts.join(job_root, "trials", trial_id)


def parameter_count(cfg: loop.LoopConfig) -> int:
    network = build_model(cfg.model, cfg.n_inputs, cfg.n_outputs)
    return sum(p.numel() for p in network.parameters())


def trial_config(
    spec: TrainingJobSpec,
    job_root: str,
    make_config: MakeConfig,
    config: dict[str, Any],
    trial_id: str,
) -> tuple[TrainingJobSpec, loop.LoopConfig]:
    """The trial's spec and loop configuration."""
    assert spec.search is not None
    trial_spec = apply_params(spec, search_space.point(spec.search, config))
    cfg = make_config(trial_spec, trial_root(job_root, trial_id), 0)
    extra = {**cfg.extra_report, "params": parameter_count(cfg)}
    return trial_spec, replace(cfg, report_every_epoch=True, extra_report=extra)


def _on_train(cfg: loop.LoopConfig, spec: TrainingJobSpec, workers: int, trial_id: str) -> None:
    # Imported here: a one-worker trial never needs Ray Train.
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from modelops_runtime.train import distributed

    resources = spec.resources.model_copy(
        update={"workers": workers, "min_workers": None, "max_workers": None}
    )
    trainer = TorchTrainer(
        distributed._worker,
        train_loop_config={"loop": cfg},
        torch_config=TorchConfig(backend="nccl" if resources.gpus_per_worker else "gloo"),
        scaling_config=distributed.scaling_config(resources),
        run_config=RunConfig(
            name=f"trial-{trial_id}",
            # Ray Train's own run state only; the loop's checkpoints are in the store.
            storage_path=tempfile.mkdtemp(prefix="modelops-trial-"),
            failure_config=FailureConfig(max_failures=spec.backoff_limit),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def run_trial(
    config: dict[str, Any], spec: TrainingJobSpec, job_root: str, make_config: MakeConfig
) -> None:
    """Tune's function trainable."""
    assert spec.search is not None
    trial_id = tune.get_context().get_trial_id()
    trial_spec, cfg = trial_config(spec, job_root, make_config, config, trial_id)
    workers = spec.search.workers_per_trial
    if workers == 1:
        loop.run(cfg, Comm.alone(cfg.use_gpu), tune.report)
    else:
        _on_train(cfg, trial_spec, workers, trial_id)
