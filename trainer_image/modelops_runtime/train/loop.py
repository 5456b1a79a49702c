"""The training loop one worker runs: the same code in-process, on Ray Train, or in a trial.

Rank 0 checkpoints to the store in the background while the next epoch trains (see
`saver`): every epoch, except that epochs shorter than `CHECKPOINT_SECONDS` share one.
The last epoch's checkpoint is complete before the loop returns, and so is each epoch's
before an `on_epoch_end` callback runs. Reports (progress) go out at most once per
`REPORT_SECONDS`, and always for the last epoch: on Ray Train a report waits until the
controller polls the worker, so one per epoch would pace short epochs by the poll
interval instead of by their work.

On start the loop resumes from the newest complete checkpoint under its root, which
belongs to one run (job, spec and data; see `modelops_runtime.train.runs`), so a
changed spec or dataset never continues from another run's weights. A restarted worker
group or a new process of the same run redoes the epochs after that checkpoint (about a
second of work at most, or the epoch whose checkpoint was still being written); they are
deterministic in (seed, epoch, rank), so the resumed run ends with the weights of an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modelops.api.training import Mode, ModelSpec, Task, TrainingSpec
from modelops_runtime import artifacts
from modelops_runtime.data import split
from modelops_runtime.data.pipeline import (
    DataPlan,
    ReadLog,
    Resident,
    epoch_batches,
    iter_examples,
    steps_per_epoch,
)
from modelops_runtime.models import build_model
from modelops_runtime.train import checkpoint, progress
from modelops_runtime.train.comm import Comm
from modelops_runtime.train.losses import default_loss, make_loss
from modelops_runtime.train.optim import learning_rate, make_optimizer
from modelops_runtime.train.saver import Saver

Report = Callable[[dict[str, Any]], None]
_EVAL_BATCH = 4096
# Above Ray Train's poll interval (see `distributed`), so a report rarely waits for a poll.
REPORT_SECONDS = 1.0
# Epochs shorter than this share a checkpoint: writing one costs more than such an epoch.
CHECKPOINT_SECONDS = 1.0


@dataclass(frozen=True)
class EpochEnd:
    """Passed to `on_epoch_end` after an epoch's checkpoint is complete (the loop waits for
    the write only when a callback is set)."""

    epoch: int
    rank: int
    world: int
    attempt: int
    metrics: dict[str, float]


@dataclass
class LoopConfig:
    """Everything a worker needs; picklable, so Ray can ship it."""

    job_id: str
    model: ModelSpec
    training: TrainingSpec
    data: DataPlan
    n_inputs: int
    n_outputs: int
    checkpoint_root: str
    init_weights: str | None = None
    lr_scale: float = 1.0
    threads: int | None = None
    use_gpu: bool = False
    on_epoch_end: Callable[[EpochEnd], None] | None = None
    extra_report: dict[str, Any] = field(default_factory=dict)
    # Search trials: Tune's schedulers count epochs, so every epoch is reported.
    report_every_epoch: bool = False


def _fresh_state() -> dict[str, Any]:
    return {
        "epoch": 0,
        "history": [],
        "best": None,
        "bad_epochs": 0,
        "stopped_early": False,
        "finished": False,
        "shards_read": [],
        "scaler": None,
    }


def _improved(value: float, best: float | None, mode: Mode, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == Mode.MIN else value > best + min_delta


@torch.no_grad()
def _validate(
    cfg: LoopConfig, network: nn.Module, comm: Comm, loss_fn: Callable[..., torch.Tensor], log: ReadLog, resident: Resident
) -> dict[str, float]:
    """Validation metrics over all workers' validation examples."""
    network.eval()
    loss_sum = correct = sq_err = abs_err = 0.0
    count = 0
    scaling = cfg.data.scaling
    target_std = float(np.mean(scaling.target_std)) if scaling is not None and scaling.target_std is not None else 1.0
    for examples in iter_examples(cfg.data, "validation", comm.rank, comm.world, log=log, resident=resident):
        for start in range(0, len(examples), _EVAL_BATCH):
            x = torch.from_numpy(examples.x[start : start + _EVAL_BATCH]).to(comm.device)
            y = torch.from_numpy(examples.y[start : start + _EVAL_BATCH]).to(comm.device)
            out = network(x).float()
            loss_sum += float(loss_fn(out, y)) * len(x)
            count += len(x)
            if cfg.data.task == Task.CLASSIFICATION:
                predicted = (out[:, 0] > 0).long() if out.shape[-1] == 1 else out.argmax(dim=-1)
                correct += float((predicted == y).sum())
            else:
                diff = (out - y) * target_std
                sq_err += float((diff**2).mean(dim=-1).sum())
                abs_err += float(diff.abs().mean(dim=-1).sum())
    loss_sum, correct, sq_err, abs_err, total = comm.sum([loss_sum, correct, sq_err, abs_err, float(count)])
    if total == 0:
        return {}
    metrics = {"val_loss": loss_sum / total}
    if cfg.data.task == Task.CLASSIFICATION:
        metrics["val_accuracy"] = correct / total
    else:
        metrics["val_mse"] = sq_err / total
        metrics["val_mae"] = abs_err / total
    return metrics


def _start(cfg: LoopConfig, comm: Comm) -> tuple[int, int | None]:
    """(attempt number, epoch to resume from), decided by rank 0 for everyone."""
    claimed = None
    if comm.rank == 0:
        claimed = (checkpoint.next_attempt(cfg.checkpoint_root), checkpoint.latest_epoch(cfg.checkpoint_root))
    attempt, resume = comm.broadcast(claimed)  # type: ignore[misc]
    return attempt, resume


# Explicit: loading a predictor in the same process turns gradients off globally.
@torch.enable_grad()
def run(cfg: LoopConfig, comm: Comm, report: Report) -> dict[str, Any]:
    """Train to the configured epoch count (or early stop); returns the final loop state."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    attempt, resume = _start(cfg, comm)
    root, spec = cfg.checkpoint_root, cfg.training
    state = checkpoint.load_state(root, resume) if resume else _fresh_state()
    if state["finished"]:
        return state

    torch.manual_seed(spec.seed)
    network = build_model(cfg.model, cfg.n_inputs, cfg.n_outputs)
    if resume:
        network.load_state_dict(checkpoint.load_model(root, resume))
    elif cfg.init_weights:
        tensors = artifacts.load_weights(cfg.init_weights)
        network.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    network.to(comm.device)
    model: nn.Module = network
    if comm.distributed:
        device_ids = [comm.device.index] if comm.device.type == "cuda" else None
        # Gradients live in the all-reduce buckets: one copy fewer per step.
        model = nn.parallel.DistributedDataParallel(network, device_ids=device_ids, gradient_as_bucket_view=True)

    base_lr = spec.optimizer.learning_rate * cfg.lr_scale
    optimizer = make_optimizer(spec.optimizer, model.parameters(), base_lr)
    if resume:
        optimizer.load_state_dict(checkpoint.load_optimizer(root, resume, state))
    amp = cfg.use_gpu and comm.device.type == "cuda" and spec.mixed_precision
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if amp and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    loss_fn = make_loss(spec.loss or default_loss(cfg.data.task), cfg.data.task)
    steps = steps_per_epoch(cfg.data, comm.world, spec.batch_size)
    log = ReadLog(set(state["shards_read"]))
    resident = Resident(cfg.data, comm.rank, comm.world)
    last_report = last_checkpoint = -float("inf")

    # Rank 0 writes the checkpoints, in the background (see `saver`).
    saver = Saver(root) if comm.rank == 0 else None
    try:
        for epoch in range(state["epoch"] + 1, spec.epochs + 1):
            lr = learning_rate(spec.schedule, base_lr, epoch, spec.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            # Dropout draws from a generator fixed by (seed, epoch, rank): a redone epoch matches.
            torch.manual_seed(split.key("dropout", spec.seed, epoch, comm.rank) % (2**31))
            started_at, tick, cpu_tick = time.time(), time.perf_counter(), time.thread_time()
            first_step_at: float | None = None
            loss_sum = torch.zeros((), device=comm.device)
            samples = 0
            for x_np, y_np in epoch_batches(cfg.data, comm.rank, comm.world, epoch, spec.batch_size, steps, log, resident):
                x = torch.from_numpy(x_np).to(comm.device, non_blocking=True)
                y = torch.from_numpy(y_np).to(comm.device, non_blocking=True)
                with torch.autocast(comm.device.type, dtype=torch.float16, enabled=amp):
                    loss = loss_fn(model(x).float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if first_step_at is None:
                    first_step_at = time.time()
                loss_sum += loss.detach() * len(x)
                samples += len(x)
            seconds = time.perf_counter() - tick
            # CPU time of this thread (torch computes here with one intra-op thread): a
            # measure of the loop's own cost that does not depend on other load on the machine.
            cpu_seconds = time.thread_time() - cpu_tick
            # Rank 0's clock decides when to report, for all ranks at once: on Ray Train every
            # rank must make the same report calls. It rides on the sum the epoch needs anyway.
            due = comm.rank == 0 and (cfg.report_every_epoch or time.monotonic() - last_report >= REPORT_SECONDS)
            train_loss, all_samples, reporting = comm.sum([float(loss_sum), float(samples), float(due)])
            validate_tick = time.perf_counter()
            metrics = {"train_loss": train_loss / max(all_samples, 1.0), **_validate(cfg, network, comm, loss_fn, log, resident)}
            validate_seconds = time.perf_counter() - validate_tick
            throughput = all_samples / seconds if seconds > 0 else 0.0

            stopping = spec.early_stopping
            if stopping is not None and stopping.metric in metrics:
                if _improved(metrics[stopping.metric], state["best"], stopping.mode, stopping.min_delta):
                    state["best"], state["bad_epochs"] = metrics[stopping.metric], 0
                else:
                    state["bad_epochs"] += 1
                state["stopped_early"] = state["bad_epochs"] >= stopping.patience
            state["history"].append(
                {
                    "epoch": epoch,
                    "attempt": attempt,
                    "learning_rate": lr,
                    "metrics": metrics,
                    "samples_per_second": throughput,
                    "train_seconds": seconds,
                    "train_cpu_seconds": cpu_seconds,
                    "validate_seconds": validate_seconds,
                    "samples": samples,
                    "started_at": started_at,
                    "first_step_at": first_step_at,
                }
            )
            read = sorted(set().union(*comm.gather(sorted(log.paths))))
            state.update(
                epoch=epoch,
                shards_read=read,
                scaler=scaler.state_dict() if amp else None,
                finished=epoch == spec.epochs or state["stopped_early"],
            )
            waited_for = cfg.on_epoch_end is not None or state["finished"]
            if saver is not None and (waited_for or time.monotonic() - last_checkpoint >= CHECKPOINT_SECONDS):
                last_checkpoint = time.monotonic()
                saver.put(epoch, network.state_dict(), optimizer.state_dict(), {**state, "attempt": attempt})
                if waited_for:
                    saver.flush()
            if waited_for:
                # The callback, and the end of the run, come after the checkpoint is complete.
                comm.barrier()
            if reporting or state["finished"]:
                last_report = time.monotonic()
                report(
                    {
                        "epoch": epoch,
                        "total_epochs": spec.epochs,
                        "attempt": attempt,
                        "samples_per_second": throughput,
                        **({"checkpoint_epoch": saver.saved} if saver is not None and saver.saved else {}),
                        **metrics,
                        **cfg.extra_report,
                    }
                )
            if cfg.on_epoch_end is not None:
                cfg.on_epoch_end(EpochEnd(epoch, comm.rank, comm.world, attempt, metrics))
            if state["stopped_early"]:
                break
    finally:
        if saver is not None:
            saver.close()
    return state


def run_in_process(cfg: LoopConfig, progress_path: str | None) -> dict[str, Any]:
    """The loop in this process, one worker, no Ray: for tests, benchmarks and tiny jobs."""

    def report(metrics: dict[str, Any]) -> None:
        if progress_path:
            progress.write(progress_path, progress.from_report(cfg.job_id, metrics, cfg.checkpoint_root))

    return run(cfg, Comm.alone(cfg.use_gpu), report)
