"""A stored version, loaded for inference: numpy in, numpy out.

Weights file keys: `model.*` is the network's state dict; optional `input.mean` /
`input.std` standardise inputs, and `target.mean` / `target.std` undo the
scaling of regression and forecasting outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from modelops.api.artifact import EnsembleCard, EnsembleMemberCard, ModelCard, WeightsFormat
from modelops.api.training import EnsembleMethod, Task
from modelops_runtime import artifacts
from modelops_runtime.errors import ModelFileError
from modelops_runtime.models import build_model


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def split_weights(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(network state dict, scaling tensors) of a weights file."""
    scaling = {k: v for k, v in tensors.items() if k.startswith(("input.", "target."))}
    return _sub(tensors, "model."), scaling


@dataclass
class SingleModel:
    """One network with its input and output scaling."""

    card: ModelCard
    network: nn.Module
    scaling: dict[str, torch.Tensor]

    @torch.inference_mode()
    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs: probabilities for a classifier, values otherwise."""
        result: np.ndarray = self.scores_tensor(torch.as_tensor(batch, dtype=torch.float32)).numpy()
        return result

    def scores_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """`scores` on tensors: traceable, so a server can run it as one graph."""
        if "input.mean" in self.scaling:
            x = (x - self.scaling["input.mean"]) / self.scaling["input.std"]
        out = self.network(x)
        if self.card.task == Task.CLASSIFICATION:
            out = torch.sigmoid(out) if self.card.n_outputs == 1 else torch.softmax(out, dim=-1)
        elif "target.mean" in self.scaling:
            out = out * self.scaling["target.std"] + self.scaling["target.mean"]
        result: torch.Tensor = out
        return result


def _load_single(folder_uri: str, card: ModelCard) -> SingleModel | Scorer:
    if card.weights_format == WeightsFormat.ONNX:
        # Imported here: processes that serve only built-in networks never load ONNX Runtime.
        from modelops_runtime.onnx_predictor import load_onnx

        return load_onnx(folder_uri, card)
    if card.spec is None:
        raise ValueError(f"{folder_uri}: card has no network spec")
    n_in = card.n_features * (card.window or 1) if card.spec.architecture == "mlp" else card.n_features
    network = build_model(card.spec, n_in, card.n_outputs)
    uri = artifacts.join(folder_uri, artifacts.WEIGHTS)
    try:
        state, scaling = split_weights(artifacts.load_weights(uri))
        network.load_state_dict(state)
    except (SafetensorError, RuntimeError) as error:  # truncated, malformed, or another network's
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ModelFileError(f"{uri}: cannot be loaded: {first}") from None
    network.eval()
    return SingleModel(card=card, network=network, scaling=scaling)


class Scorer(Protocol):
    """Anything with batch scores: a SingleModel, or a whole Predictor inside a composed ensemble."""

    def scores(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class Predictor:
    """A served version: a single network or an ensemble of them."""

    card: ModelCard
    members: list[SingleModel] | list[Scorer]
    weights: list[float]
    method: EnsembleMethod

    @property
    def is_classifier(self) -> bool:
        return self.card.task == Task.CLASSIFICATION

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities or values for a batch, combined over members."""
        outputs = [member.scores(batch) for member in self.members]
        if len(outputs) == 1:
            return outputs[0]
        if self.method == EnsembleMethod.VOTE and self.is_classifier:
            votes = np.zeros_like(outputs[0])
            for out in outputs:
                votes[np.arange(len(out)), out.argmax(axis=-1)] += 1.0
            return votes / len(outputs)
        weights = np.asarray(self.weights if self.method == EnsembleMethod.WEIGHTED else [1.0] * len(outputs))
        stacked = np.stack(outputs)
        combined: np.ndarray = np.tensordot(weights / weights.sum(), stacked, axes=1)
        return combined

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class indices for a classifier, values otherwise."""
        return self.decide(self.scores(batch))

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Predictions from already computed scores (saves a second forward pass)."""
        if self.is_classifier:
            if scores.shape[-1] == 1:
                return (scores[..., 0] >= 0.5).astype(np.int64)
            return scores.argmax(axis=-1)
        return scores


def load_predictor(folder_uri: str) -> Predictor:
    """Load the version stored at `folder_uri` (no training code is imported)."""
    card = artifacts.load_card(folder_uri)
    if card.ensemble is None:
        return Predictor(card, [_load_single(folder_uri, card)], [1.0], EnsembleMethod.MEAN)
    members, weights = [], []
    for member in card.ensemble.members:
        member_uri = artifacts.join(folder_uri, member.path)
        members.append(_load_single(member_uri, artifacts.load_card(member_uri)))
        weights.append(member.weight)
    return Predictor(card, members, weights, card.ensemble.method)


def compose(
    members: list[Predictor], method: EnsembleMethod, weights: list[float], sources: list[str]
) -> Predictor:
    """An ensemble of separately stored versions, served as one model.

    The members must agree on inputs, task and outputs; the card is the first
    member's with an ensemble section naming the others.
    """
    first = members[0].card
    for member in members[1:]:
        card = member.card
        if (card.inputs, card.task, card.n_outputs) != (first.inputs, first.task, first.n_outputs):
            raise ValueError(f"version {card.version} does not match version {first.version}'s inputs/outputs")
    ensemble = EnsembleCard(
        method=method,
        members=[
            EnsembleMemberCard(path=f"../v{m.card.version}", weight=w, source=s)
            for m, w, s in zip(members, weights, sources, strict=True)
        ],
    )
    card = first.model_copy(update={"ensemble": ensemble, "spec": None})
    scorers: list[Scorer] = list(members)
    return Predictor(card, scorers, weights, method)
