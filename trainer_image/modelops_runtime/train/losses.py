"""Loss functions by name, over raw network outputs (logits for classifiers)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from modelops.api.training import Loss, Task

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_REGRESSION: dict[Loss, LossFn] = {
    Loss.MSE: F.mse_loss,
    Loss.MAE: F.l1_loss,
    Loss.HUBER: F.huber_loss,
}


def default_loss(task: Task) -> Loss:
    return Loss.CROSS_ENTROPY if task == Task.CLASSIFICATION else Loss.MSE


def check_loss(loss: Loss, task: Task) -> None:
    """Reject combinations that have no meaning before any worker starts."""
    if task != Task.CLASSIFICATION and loss in (Loss.CROSS_ENTROPY, Loss.BINARY_CROSS_ENTROPY):
        raise ValueError(f"loss {loss.value} needs a classification task, not {task.value}")


def output_width(loss: Loss, task: Task, n_classes: int, horizon: int) -> int:
    """Network outputs: one logit for binary cross-entropy on two classes, else one per class."""
    if task != Task.CLASSIFICATION:
        return horizon
    if loss == Loss.BINARY_CROSS_ENTROPY and n_classes == 2:
        return 1
    return n_classes


def _one_hot(target: torch.Tensor, width: int) -> torch.Tensor:
    return F.one_hot(target, width).to(torch.float32)


def make_loss(loss: Loss, task: Task) -> LossFn:
    """The loss of `outputs` against targets: class indices, or scaled values."""
    check_loss(loss, task)
    if loss == Loss.CROSS_ENTROPY:
        return F.cross_entropy
    if loss == Loss.BINARY_CROSS_ENTROPY:

        def binary(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if outputs.shape[-1] == 1:
                return F.binary_cross_entropy_with_logits(outputs[:, 0], target.to(torch.float32))
            # Several classes: one sigmoid per class against one-hot targets.
            return F.binary_cross_entropy_with_logits(outputs, _one_hot(target, outputs.shape[-1]))

        return binary
    distance = _REGRESSION[loss]
    if task != Task.CLASSIFICATION:
        return distance

    def on_probabilities(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # A distance loss on a classifier compares class probabilities with one-hot targets.
        return distance(torch.softmax(outputs, dim=-1), _one_hot(target, outputs.shape[-1]))

    return on_probabilities
