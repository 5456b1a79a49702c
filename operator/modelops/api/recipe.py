"""The training recipe of a TrainingJob (spec.training): loss, optimizer, schedule, stopping."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from modelops.api.base import ApiModel, CelRule


class Loss(StrEnum):
    CROSS_ENTROPY = "crossEntropy"
    BINARY_CROSS_ENTROPY = "binaryCrossEntropy"
    MSE = "mse"
    MAE = "mae"
    HUBER = "huber"


class OptimizerName(StrEnum):
    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAGRAD = "adagrad"
    RMSPROP = "rmsprop"
    ADAM = "adam"
    ADAMW = "adamw"


class OptimizerSpec(ApiModel):
    """The optimizer and its hyperparameters."""

    cel_rules = (
        CelRule(
            rule="!self.nesterov || self.name == 'momentum'",
            message="nesterov needs the momentum optimizer",
            check=lambda o: not o.nesterov or o.name == OptimizerName.MOMENTUM,
            field="nesterov",
        ),
    )

    name: OptimizerName = Field(default=OptimizerName.ADAM, description="Optimizer.")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0, description="Learning rate.")
    momentum: float = Field(
        default=0.9, ge=0.0, lt=1.0, description="Momentum factor (momentum, rmsprop)."
    )
    nesterov: bool = Field(default=False, description="Nesterov momentum (momentum only).")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 weight decay.")
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0, description="Adam first-moment decay.")
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0, description="Adam second-moment decay.")


class ScheduleType(StrEnum):
    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"


class ScheduleSpec(ApiModel):
    """Learning-rate schedule, applied per epoch after an optional linear warm-up."""

    type: ScheduleType = Field(default=ScheduleType.CONSTANT, description="Schedule shape.")
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="Linear warm-up epochs.")
    step_size: int = Field(default=10, ge=1, description="Epochs between decays (step).")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0, description="Decay factor (step).")
    min_learning_rate: float = Field(
        default=0.0, ge=0.0, description="Floor of the cosine schedule."
    )


class Mode(StrEnum):
    MIN = "min"
    MAX = "max"


class EarlyStoppingSpec(ApiModel):
    """Stop when the monitored validation metric stops improving."""

    metric: str = Field(
        default="val_loss", min_length=1, max_length=64, description="Metric to monitor."
    )
    mode: Mode = Field(default=Mode.MIN, description="Whether lower or higher is better.")
    patience: int = Field(default=3, ge=1, le=1000, description="Epochs without improvement.")
    min_delta: float = Field(default=0.0, ge=0.0, description="Smallest change that counts.")


class TrainingSpec(ApiModel):
    """The training recipe."""

    cel_rules = (
        CelRule(
            rule="!has(self.schedule) || self.schedule.warmupEpochs < self.epochs",
            message="schedule.warmupEpochs must be less than epochs",
            check=lambda t: t.schedule.warmup_epochs < t.epochs,
            field="schedule",
        ),
    )

    epochs: int = Field(default=10, ge=1, le=10000, description="Passes over the data.")
    batch_size: int = Field(default=64, ge=1, le=1048576, description="Rows per step and worker.")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Seed of shuffling, splits and initialisation."
    )
    loss: Loss | None = Field(
        default=None,
        description="Loss; crossEntropy for classification and mse otherwise when omitted.",
    )
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec, description="Optimizer settings."
    )
    schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec, description="Learning-rate schedule."
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="Early stopping; off when omitted."
    )
    mixed_precision: bool = Field(
        default=True, description="Automatic mixed precision on GPU workers (ignored on CPU)."
    )
