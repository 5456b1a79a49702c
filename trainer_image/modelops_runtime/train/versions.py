"""Turning trained weights into a stored version: card, weights, evaluation, record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import torch

from modelops.api.artifact import (
    EnsembleCard,
    EnsembleMemberCard,
    ModelCard,
    SnapshotManifest,
    TensorSpec,
    WeightsFormat,
)
from modelops.api.training import (
    Architecture,
    DataSnapshot,
    EnsembleMethod,
    ModelSpec,
    ModelVersionRef,
    Task,
)
from modelops_runtime import artifacts
from modelops_runtime.data import shards as shard_files
from modelops_runtime.data.pipeline import DataPlan, Part
from modelops_runtime.evaluate import TRAINING_RECORD, evaluate_predictor
from modelops_runtime.models import build_model
from modelops_runtime.predictor import Predictor, Scorer, SingleModel, split_weights


@dataclass(frozen=True)
class Shape:
    """The interface of a network: what goes in and comes out."""

    task: Task
    features: list[str]
    n_features: int
    window: int | None
    n_outputs: int
    classes: list[str] | None

    def n_inputs(self, spec: ModelSpec) -> int:
        """Input width of the network: an MLP sees a window flattened."""
        if spec.architecture == Architecture.MLP:
            return self.n_features * (self.window or 1)
        return self.n_features


def _label_datatype(classes: list[str] | None) -> Literal["INT64", "BYTES"]:
    """Class names as BYTES when the labels were strings; integer labels stay INT64."""
    try:
        [int(name) for name in classes or []]
    except ValueError:
        return "BYTES"
    return "INT64"


def _tensors(shape: Shape) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if shape.window is not None and shape.n_features == 1:
        inputs = [TensorSpec(name="input", datatype="FP32", shape=[-1, shape.window])]
    elif shape.window is not None:
        inputs = [TensorSpec(name="input", datatype="FP32", shape=[-1, shape.window, shape.n_features])]
    else:
        inputs = [TensorSpec(name="input", datatype="FP32", shape=[-1, shape.n_features])]
    if shape.task == Task.CLASSIFICATION:
        outputs = [
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, shape.n_outputs]),
            TensorSpec(name="label", datatype=_label_datatype(shape.classes), shape=[-1]),
        ]
    else:
        outputs = [TensorSpec(name="prediction", datatype="FP32", shape=[-1, shape.n_outputs])]
    return inputs, outputs


def make_card(
    name: str,
    version: int,
    shape: Shape,
    spec: ModelSpec | None,
    parent: int | None = None,
    ensemble: EnsembleCard | None = None,
) -> ModelCard:
    inputs, outputs = _tensors(shape)
    return ModelCard(
        name=name,
        version=version,
        parent=parent,
        created_at=datetime.now(UTC),
        task=shape.task,
        spec=spec,
        features=shape.features,
        n_features=shape.n_features,
        window=shape.window,
        n_outputs=shape.n_outputs,
        classes=shape.classes,
        inputs=inputs,
        outputs=outputs,
        ensemble=ensemble,
    )


def single_model(card: ModelCard, tensors: dict[str, torch.Tensor], shape: Shape) -> SingleModel:
    """The in-memory predictor member for weights not yet behind a card."""
    if card.spec is None:
        raise ValueError("a single model needs a network spec")
    network = build_model(card.spec, shape.n_inputs(card.spec), card.n_outputs)
    state, scaling = split_weights(tensors)
    network.load_state_dict(state)
    network.eval()
    return SingleModel(card=card, network=network, scaling=scaling)


def save_single(
    folder: str,
    card: ModelCard,
    tensors: dict[str, torch.Tensor],
    shape: Shape,
    evaluation: tuple[DataPlan, Part],
    snapshot: SnapshotManifest | None,
    record: dict[str, Any],
) -> tuple[dict[str, float], SingleModel]:
    """Weights first, then evaluation of exactly what is served, then the card.

    A custom network is also exported as `model.onnx` (the card says `weights_format:
    onnx`), and the evaluation runs that graph; the safetensors state dict stays beside it
    for warm starts, which rebuild the network with the user's factory.
    """
    artifacts.save_weights(artifacts.join(folder, artifacts.WEIGHTS), tensors)
    if card.spec is not None and card.spec.architecture == Architecture.CUSTOM:
        card = card.model_copy(update={"weights_format": WeightsFormat.ONNX})
    member = single_model(card, tensors, shape)
    served: SingleModel | Scorer = member
    if card.weights_format == WeightsFormat.ONNX:
        from modelops_runtime import onnx_export
        from modelops_runtime.onnx_predictor import load_onnx

        onnx_export.save(folder, member)
        served = load_onnx(folder, card)
    metrics = evaluate_predictor(Predictor(card, [served], [1.0], EnsembleMethod.MEAN), *evaluation)
    artifacts.write_json(artifacts.join(folder, TRAINING_RECORD), record)
    artifacts.save_version(folder, card, None, metrics, snapshot)
    return metrics, member


def save_ensemble(
    folder: str,
    card: ModelCard,
    members: list[SingleModel],
    evaluation: tuple[DataPlan, Part],
    snapshot: SnapshotManifest | None,
    record: dict[str, Any],
) -> dict[str, float]:
    """An ensemble version over member folders already written under `folder`."""
    if card.ensemble is None:
        raise ValueError("an ensemble card needs its members")
    weights = [member.weight for member in card.ensemble.members]
    metrics = evaluate_predictor(Predictor(card, members, weights, card.ensemble.method), *evaluation)
    artifacts.write_json(artifacts.join(folder, TRAINING_RECORD), record)
    artifacts.save_version(folder, card, None, metrics, snapshot)
    return metrics


def renumber(folder: str, version: int) -> None:
    """Give a staged version another number (its first one went to another run)."""
    fs, root = artifacts.filesystem(folder)
    for path in fs.find(root):
        relative = str(path)[len(root) + 1 :]
        uri = artifacts.join(folder, relative)
        if relative.rsplit("/", 1)[-1] == artifacts.CARD:
            card = ModelCard.model_validate(artifacts.read_json(uri))
            artifacts.write_json(uri, card.model_copy(update={"version": version}).model_dump(mode="json"))
        elif relative.rsplit("/", 1)[-1] == TRAINING_RECORD:
            artifacts.write_json(uri, {**artifacts.read_json(uri), "version": version})


def ensemble_card(method: EnsembleMethod, sources: list[str], weights: list[float]) -> EnsembleCard:
    return EnsembleCard(
        method=method,
        members=[
            EnsembleMemberCard(path=f"members/{i}", weight=weight, source=source)
            for i, (source, weight) in enumerate(zip(sources, weights, strict=True))
        ],
    )


def reference(store: str, name: str, version: int, metrics: dict[str, float], snapshot: SnapshotManifest | None,
               parent: int | None) -> ModelVersionRef:
    """The status reference of a published version."""
    folder = artifacts.version_uri(store, name, version)
    return ModelVersionRef(
        name=name,
        version=version,
        uri=folder,
        metrics=metrics,
        data_snapshot=None if snapshot is None else DataSnapshot(
            uri=artifacts.join(folder, artifacts.SNAPSHOT),
            shards=len(snapshot.shards),
            rows=snapshot.rows,
            digest=shard_files.digest(snapshot),
        ),
        parent_version=parent,
    )
