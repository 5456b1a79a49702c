"""Running the loop on Ray Train: a TorchTrainer sized from the job's resources.

gloo on CPU workers; NCCL and mixed precision on GPU workers. Worker failures restart
the worker group up to backoffLimit times (FailureConfig); the restarted loop resumes
from the job's newest checkpoint in the store. Progress is written by a callback in the
Ray Train controller, which runs on the driver's node, so the file lands where the
driver (and the operator watching it) can read it.

The controller takes a worker's report when it polls the worker, every
`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` (2 s by default), and a worker's next report waits
until then. The loop reports at most once per `loop.REPORT_SECONDS`; a shorter poll
interval (unless the environment sets one) keeps that report from waiting, and lets the
run end within a fraction of a second of its last epoch.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ray.train
import ray.train.torch
from ray.train import FailureConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchConfig, TorchTrainer

from modelops.api.training import WorkerResources
from modelops_runtime.train import loop, progress
from modelops_runtime.train.comm import Comm
from modelops_runtime.train.resources import quantity

# Set in the driver's environment: Ray Train hands these to its controller and workers.
# The preemption watcher is one more actor to start per run, for cloud spot-instance
# notices; a pod's eviction reaches the operator, which retries the attempt. Ray Train's
# own metrics callbacks (for Ray's dashboard) cost about a second per run on a small
# machine; the job's progress and metrics reach users through the operator instead.
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}


def tune_environment() -> None:
    """Ray Train's settings for short reports, where the environment does not set its own."""
    for name, value in TRAIN_ENV.items():
        os.environ.setdefault(name, value)


def scaling_config(resources: WorkerResources) -> ScalingConfig:
    """Workers (or an elastic min..max range) and what each one reserves."""
    per_worker: dict[str, float] = {"CPU": quantity(resources.cpus_per_worker)}
    if resources.gpus_per_worker:
        per_worker["GPU"] = float(resources.gpus_per_worker)
    workers: int | tuple[int, int] = resources.workers
    if resources.min_workers is not None or resources.max_workers is not None:
        workers = (resources.min_workers or resources.workers, resources.max_workers or resources.workers)
    return ScalingConfig(num_workers=workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=per_worker)


class ProgressCallback(UserCallback):  # type: ignore[misc]
    """Writes rank 0's epoch report as the progress document."""

    def __init__(self, job_id: str, path: str, checkpoint_root: str | None = None) -> None:
        self.job_id = job_id
        self.path = path
        self.checkpoint_root = checkpoint_root

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics and "epoch" in metrics[0]:
            progress.write(self.path, progress.from_report(self.job_id, metrics[0], self.checkpoint_root))


def _worker(config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    comm = Comm(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())
    loop.run(config["loop"], comm, ray.train.report)


def run(
    cfg: loop.LoopConfig,
    resources: WorkerResources,
    max_failures: int,
    progress_path: str,
    storage_path: str | None = None,
) -> None:
    """Train on Ray workers; returns once every epoch is done (or raises after max_failures)."""
    tune_environment()
    gpu = resources.gpus_per_worker > 0
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"loop": cfg},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=scaling_config(resources),
        run_config=RunConfig(
            name=f"modelops-{cfg.job_id}",
            # Ray keeps only its own run state here; the checkpoints live in the model store.
            storage_path=storage_path or tempfile.mkdtemp(prefix="modelops-ray-"),
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=[ProgressCallback(cfg.job_id, progress_path, cfg.checkpoint_root)],
        ),
    )
    trainer.fit()
