"""The stored form of a model version, shared by the trainer, the server and the operator.

A version is a folder `<store>/<model>/v<version>/` holding:
- `model.safetensors`: weights (never pickle: loading must not execute code), or
  `model.onnx` for a version whose card says `weights_format: onnx` (a custom network or
  an imported model: served by ONNX Runtime without the code that built it);
- `model.json`: this module's ModelCard, enough to rebuild the network and serve it;
- `metrics.json`: evaluation metrics, name → number;
- `snapshot.json`: the SnapshotManifest of the data it was trained on;
- `publish.json`: the run that published it (absent in versions from older releases).
An ensemble version has no weights of its own; its members sit in `members/<i>/`.
A version is published create-only and never changed after (`modelops_runtime.publish`);
a folder without `model.json` is not a version.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelops.api.training import EnsembleMethod, ModelSpec, Task

CARD_FORMAT = 1


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WeightsFormat(StrEnum):
    """How a version's network is stored."""

    SAFETENSORS = "safetensors"  # a built-in architecture's state dict: model.safetensors
    ONNX = "onnx"  # a self-contained graph: model.onnx, served by ONNX Runtime


class TensorSpec(_Stored):
    """A named tensor in the Open Inference Protocol's terms."""

    name: str = Field(description="Tensor name.")
    datatype: Literal["FP32", "INT64", "BYTES"] = Field(description="Element type.")
    shape: list[int] = Field(description="Shape; -1 marks the batch dimension.")


class EnsembleMemberCard(_Stored):
    """A member of an ensemble version."""

    path: str = Field(description="Folder of the member, relative to the version.")
    weight: float = Field(default=1.0, ge=0, description="Weight in a weighted combination.")
    source: str | None = Field(default=None, description="Trial or version it came from.")


class EnsembleCard(_Stored):
    """How an ensemble version combines its members."""

    method: EnsembleMethod = Field(description="mean, vote or weighted.")
    members: list[EnsembleMemberCard] = Field(min_length=1, description="Members.")


class ModelCard(_Stored):
    """Everything needed to rebuild and serve a version, without the training code."""

    format: int = Field(default=CARD_FORMAT, description="Card format version.")
    name: str = Field(description="Model name.")
    version: int = Field(ge=1, description="Version number.")
    parent: int | None = Field(default=None, description="Warm-start parent version.")
    created_at: datetime = Field(description="When the version was saved.")
    task: Task = Field(description="What the outputs mean.")
    spec: ModelSpec | None = Field(default=None, description="Network; None for an ensemble.")
    weights_format: WeightsFormat = Field(
        default=WeightsFormat.SAFETENSORS,
        description="safetensors (model.safetensors, rebuilt from spec) or onnx (model.onnx).",
    )
    features: list[str] = Field(default_factory=list, description="Input columns, in order.")
    n_features: int = Field(ge=1, description="Input width per step.")
    window: int | None = Field(default=None, description="Steps per input of a sequence model.")
    n_outputs: int = Field(ge=1, description="Output width.")
    classes: list[str] | None = Field(
        default=None, description="Class labels, in output order, for a classifier."
    )
    inputs: list[TensorSpec] = Field(description="Input tensors served.")
    outputs: list[TensorSpec] = Field(description="Output tensors served.")
    ensemble: EnsembleCard | None = Field(default=None, description="Set on an ensemble.")


class ShardInfo(_Stored):
    """One shard file as seen at snapshot time."""

    path: str = Field(description="Path relative to the dataset URI.")
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(description="Content hash.")
    rows: int = Field(ge=0, description="Rows.")
    etag: str | None = Field(
        default=None,
        description="The object store's ETag when listed (s3://); None for a file.",
    )


class SnapshotManifest(_Stored):
    """The shards a version saw: the basis of delta detection."""

    uri: str = Field(description="Dataset URI.")
    format: str = Field(description="Shard format.")
    shards: list[ShardInfo] = Field(default_factory=list, description="Shards, sorted by path.")
    columns: list[str] = Field(default_factory=list, description="Column names of the shards.")

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)
