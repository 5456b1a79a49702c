"""The network a TrainingJob trains (spec.model): its family, its layers and its task."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from modelops.api.base import ApiModel, CelRule

RECURRENT = ("rnn", "gru", "lstm")


# Widest hidden layer: 16 layers of this width are ~4G weights, far past one GPU's memory,
# so no legitimate spec needs more and a huge width cannot be used to exhaust a node.
MAX_LAYER_WIDTH = 16384


class Architecture(StrEnum):
    MLP = "mlp"
    RNN = "rnn"
    GRU = "gru"
    LSTM = "lstm"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FORECASTING = "forecasting"


class Activation(StrEnum):
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    GELU = "gelu"


class ModelSpec(ApiModel):
    """The network to train and the task it solves."""

    cel_rules = (
        CelRule(
            rule="!self.bidirectional || self.architecture != 'mlp'",
            message="bidirectional applies to rnn, gru and lstm only",
            check=lambda m: not m.bidirectional or m.architecture != Architecture.MLP,
            field="bidirectional",
        ),
    )

    architecture: Architecture = Field(description="Network family: mlp, rnn, gru or lstm.")
    task: Task = Field(
        default=Task.CLASSIFICATION,
        description="classification (softmax or sigmoid output), regression, or forecasting "
        "(a window of a series to the next value or values).",
    )
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [128, 64],
        max_length=16,
        description="Widths of the hidden layers of an MLP.",
    )
    activation: Activation = Field(
        default=Activation.RELU, description="Activation of the MLP's hidden layers."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout probability.")
    batch_norm: bool = Field(default=False, description="Batch normalisation after hidden layers.")
    hidden_size: int = Field(
        default=64, ge=1, le=8192, description="Hidden state size of an RNN, GRU or LSTM."
    )
    num_layers: int = Field(
        default=1, ge=1, le=16, description="Stacked recurrent layers of an RNN, GRU or LSTM."
    )
    bidirectional: bool = Field(
        default=False, description="Run the recurrent layers in both directions."
    )
    num_classes: int | None = Field(
        default=None,
        ge=2,
        le=100000,
        description="Classes of a classifier; inferred from the training data when omitted.",
    )
