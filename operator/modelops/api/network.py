"""The network a TrainingJob trains (spec.model): its family, its layers and its task."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated

from pydantic import Field, PlainValidator, WithJsonSchema

from modelops.api.base import _SEGMENT, LABEL_PATTERN, ApiModel, CelRule

RECURRENT = ("rnn", "gru", "lstm")

# `package.module:function`, Python identifiers only: the operator keeps it as a string;
# only the training process imports it (see modelops_runtime.usercode).
FACTORY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
MAX_PARAMS = 32
# A source archive pushed by `modelops source push`: named by its content's sha256.
SOURCES_FOLDER = "_sources"
# Bounds of a source archive (code, not data): packed, unpacked, and its member count.
MAX_SOURCE_BYTES = 32 * 1024 * 1024
MAX_SOURCE_UNPACKED_BYTES = 128 * 1024 * 1024
MAX_SOURCE_MEMBERS = 10_000
SOURCE_URI_PATTERN = (
    rf"^(file|s3)://({_SEGMENT}|/{_SEGMENT}?)(/{_SEGMENT}?)*"
    rf"/{SOURCES_FOLDER}/{LABEL_PATTERN[1:-1]}/[0-9a-f]{{64}}\.tar\.gz$"
)


# Widest hidden layer: 16 layers of this width are ~4G weights, far past one GPU's memory,
# so no legitimate spec needs more and a huge width cannot be used to exhaust a node.
MAX_LAYER_WIDTH = 16384


class Architecture(StrEnum):
    MLP = "mlp"
    RNN = "rnn"
    GRU = "gru"
    LSTM = "lstm"
    CUSTOM = "custom"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FORECASTING = "forecasting"


class Activation(StrEnum):
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    GELU = "gelu"


MAX_OPTION_TEXT = 256


def _number(value: object) -> int | float:
    """A numeric factory parameter, kept as given: 32 stays an int, 0.1 a float."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise ValueError(
        f"must be a finite number, not {type(value).__name__} {str(value)[:40]!r} "
        "(text and flags go in options)"
    )


# `int | float` is not a structural schema; the CRD says number (which admits both) and
# the model keeps the type the manifest wrote.
ParamNumber = Annotated[
    int | float,
    PlainValidator(_number),
    WithJsonSchema({"type": "number", "description": "A finite number."}),
]
OptionText = Annotated[str, Field(max_length=MAX_OPTION_TEXT)]


def _custom_only(field: str) -> CelRule:
    """`field` (the same name in the manifest and the model) is set for custom only."""
    return CelRule(
        rule=f"self.architecture == 'custom' || !has(self.{field})",
        message=f"{field} applies to architecture custom only",
        check=lambda m: m.architecture == Architecture.CUSTOM or getattr(m, field) is None,
        field=field,
    )


class ModelSpec(ApiModel):
    """The network to train and the task it solves."""

    cel_rules = (
        CelRule(
            rule="!self.bidirectional || self.architecture in ['rnn', 'gru', 'lstm']",
            message="bidirectional applies to rnn, gru and lstm only",
            check=lambda m: not m.bidirectional or m.architecture in RECURRENT,
            field="bidirectional",
        ),
        CelRule(
            rule="self.architecture != 'custom' || has(self.factory)",
            message="architecture custom needs a factory (package.module:function)",
            check=lambda m: m.architecture != Architecture.CUSTOM or m.factory is not None,
            field="factory",
        ),
        _custom_only("factory"),
        _custom_only("params"),
        _custom_only("options"),
        CelRule(
            rule="!has(self.params) || !has(self.options) || "
            "!self.params.exists(k, k in self.options)",
            message="a factory argument is given once: a key is in both params and options",
            check=lambda m: not set(m.params or {}) & set(m.options or {}),
            field="options",
        ),
        _custom_only("source"),
    )

    architecture: Architecture = Field(
        description="Network family: mlp, rnn, gru, lstm, or custom (built by `factory`)."
    )
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
    factory: str | None = Field(
        default=None,
        max_length=256,
        pattern=FACTORY_PATTERN,
        description="A custom network's factory, `package.module:function`: called with the "
        "input width per step and the output width as keyword arguments n_inputs and "
        "n_outputs plus `params` and `options`, it returns a torch.nn.Module. Imported only by the "
        "training processes, never by the operator.",
    )
    params: dict[str, ParamNumber] | None = Field(
        default=None,
        max_length=MAX_PARAMS,
        description="Numeric keyword arguments of the factory (sizes, rates); a search "
        "varies them as model.params.<key> (camelCase keys).",
    )
    options: dict[str, OptionText] | None = Field(
        default=None,
        max_length=MAX_PARAMS,
        description="Text keyword arguments of the factory (e.g. an activation's name), "
        "passed as strings; a key is not also in params.",
    )
    source: str | None = Field(
        default=None,
        max_length=1024,
        pattern=SOURCE_URI_PATTERN,
        description="A source archive in the store holding the factory's package, "
        "`<store>/_sources/<name>/<sha256>.tar.gz` as `modelops source push` prints it; "
        "its content must hash to the name. When omitted, the factory is imported from the "
        "job's image.",
    )

    def factory_arguments(self) -> dict[str, int | float | str]:
        """The keyword arguments `params` and `options` give the factory."""
        return {**(self.options or {}), **(self.params or {})}
