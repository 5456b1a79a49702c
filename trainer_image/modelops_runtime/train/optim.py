"""Optimizers by name, and the per-epoch learning-rate schedule as a pure function."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from modelops.api.training import OptimizerName, OptimizerSpec, ScheduleSpec, ScheduleType


def make_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The torch optimizer for `spec`, starting at learning rate `lr`."""
    name, wd = spec.name, spec.weight_decay
    if name == OptimizerName.SGD:
        return torch.optim.SGD(params, lr=lr, weight_decay=wd)
    if name == OptimizerName.MOMENTUM:
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=wd)
    if name == OptimizerName.ADAGRAD:
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if name == OptimizerName.RMSPROP:
        return torch.optim.RMSprop(params, lr=lr, momentum=spec.momentum, weight_decay=wd)
    if name == OptimizerName.ADAM:
        return torch.optim.Adam(params, lr=lr, betas=(spec.beta1, spec.beta2), weight_decay=wd)
    if name == OptimizerName.ADAMW:
        return torch.optim.AdamW(params, lr=lr, betas=(spec.beta1, spec.beta2), weight_decay=wd)
    raise ValueError(f"unknown optimizer {name}")


def learning_rate(schedule: ScheduleSpec, base: float, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based `epoch` of `epochs`.

    Warm-up rises linearly to `base` over `warmup_epochs`; the schedule then runs over
    the remaining epochs as if they started at zero.
    """
    warmup = schedule.warmup_epochs
    if epoch <= warmup:
        return base * epoch / (warmup + 1)
    step = epoch - warmup - 1
    if schedule.type == ScheduleType.STEP:
        return base * schedule.gamma ** (step // schedule.step_size)
    if schedule.type == ScheduleType.COSINE:
        span = max(1, epochs - warmup - 1)
        floor = min(schedule.min_learning_rate, base)
        return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, span) / span))
    return base
