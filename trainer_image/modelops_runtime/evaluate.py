"""Evaluation of a stored version on a dataset, streamed: `python -m modelops_runtime evaluate`.

Metrics (no prefixes, as in metrics.json): accuracy, f1_macro and log_loss for a
classifier; mse, mae and r2 otherwise; a forecaster adds mse_naive, the error of
repeating the window's last value, and skill = 1 - mse / mse_naive.
"""

from __future__ import annotations

import argparse
import json
from typing import Protocol

import numpy as np

from modelops.api.artifact import ModelCard
from modelops.api.training import DataFormat, SequenceSpec, Task
from modelops_runtime import artifacts
from modelops_runtime.data.pipeline import DataPlan, Part, iter_examples
from modelops_runtime.data.shards import snapshot
from modelops_runtime.predictor import Predictor, load_predictor

TRAINING_RECORD = "training.json"
_BATCH = 4096
_EPS = 1e-15


class Accumulator(Protocol):
    def update(self, x: np.ndarray, scores: np.ndarray, y: np.ndarray) -> None: ...

    def result(self) -> dict[str, float]: ...


class ClassificationMetrics:
    """Confusion matrix and summed log-loss; macro-F1 over classes seen or predicted."""

    def __init__(self, n_classes: int) -> None:
        self.confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        self.log_loss = 0.0

    def update(self, x: np.ndarray, scores: np.ndarray, y: np.ndarray) -> None:
        probs = np.concatenate([1.0 - scores, scores], axis=1) if scores.shape[1] == 1 else scores
        predicted = probs.argmax(axis=1)
        np.add.at(self.confusion, (y, predicted), 1)
        picked = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
        self.log_loss -= float(np.log(picked).sum())

    def result(self) -> dict[str, float]:
        total = int(self.confusion.sum())
        if total == 0:
            return {}
        tp = np.diag(self.confusion).astype(np.float64)
        actual, predicted = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        present = (actual + predicted) > 0
        denominator = actual + predicted
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        return {
            "accuracy": float(tp.sum() / total),
            "f1_macro": float(f1[present].mean()),
            "log_loss": self.log_loss / total,
        }


class RegressionMetrics:
    """Sums for mse, mae and r2 (uniform average over outputs); optionally the naive baseline."""

    def __init__(self, naive: bool = False) -> None:
        self.naive = naive
        self.count = 0
        self.sums: dict[str, np.ndarray | float] = {}

    def _add(self, name: str, value: np.ndarray | float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value

    def update(self, x: np.ndarray, scores: np.ndarray, y: np.ndarray) -> None:
        y = y.astype(np.float64).reshape(len(y), -1)
        error = scores.astype(np.float64).reshape(len(y), -1) - y
        self.count += len(y)
        self._add("sq", (error**2).sum(axis=0))
        self._add("abs", np.abs(error).sum(axis=0))
        self._add("y", y.sum(axis=0))
        self._add("y2", (y**2).sum(axis=0))
        if self.naive:
            last = x.reshape(len(x), -1)[:, -1:].astype(np.float64)
            self._add("naive", ((y - last) ** 2).sum(axis=0))

    def result(self) -> dict[str, float]:
        n = self.count
        if n == 0:
            return {}
        sq = np.asarray(self.sums["sq"])
        total = np.asarray(self.sums["y2"]) - np.asarray(self.sums["y"]) ** 2 / n
        r2 = np.where(total > 0, 1.0 - sq / np.where(total > 0, total, 1.0), 0.0)
        out = {
            "mse": float(sq.mean() / n),
            "mae": float(np.asarray(self.sums["abs"]).mean() / n),
            "r2": float(r2.mean()),
        }
        if self.naive:
            naive = float(np.asarray(self.sums["naive"]).mean() / n)
            out["mse_naive"] = naive
            out["skill"] = 1.0 - out["mse"] / naive if naive > 0 else 0.0
        return out


def accumulator(card: ModelCard) -> Accumulator:
    if card.task == Task.CLASSIFICATION:
        return ClassificationMetrics(len(card.classes or []) or max(card.n_outputs, 2))
    return RegressionMetrics(naive=card.window is not None)


def evaluate_predictor(predictor: Predictor, plan: DataPlan, part: Part = "all") -> dict[str, float]:
    """Metrics of `predictor` on the examples of `plan` (raw inputs: the predictor scales)."""
    metrics = accumulator(predictor.card)
    for examples in iter_examples(plan, part, scaled=False):
        for start in range(0, len(examples), _BATCH):
            x = examples.x[start : start + _BATCH]
            metrics.update(x, predictor.scores(x), examples.y[start : start + _BATCH])
    return metrics.result()


def data_plan(card: ModelCard, uri: str, fmt: DataFormat, label: str | None, seed: int = 0, validation_split: float = 0.2) -> DataPlan:
    """How to read evaluation data for a version: its features, label and windows."""
    sequence = None
    if card.window is not None:
        sequence = SequenceSpec(column=card.features[0], window=card.window, horizon=card.n_outputs)
    return DataPlan(
        uri=uri,
        format=fmt,
        # Rows per shard are all a plan needs; hashing every file would read it twice.
        shards=snapshot(uri, fmt, content_hash=False).shards,
        features=card.features,
        label=label,
        sequence=sequence,
        task=card.task,
        classes=card.classes,
        validation_split=validation_split,
        seed=seed,
    )


def recorded_label(folder_uri: str) -> str | None:
    """The label column the version was trained with, from its training record."""
    fs, path = artifacts.filesystem(artifacts.join(folder_uri, TRAINING_RECORD))
    if not fs.exists(path):
        return None
    label: str | None = artifacts.read_json(artifacts.join(folder_uri, TRAINING_RECORD)).get("label")
    return label


def resolve_version(store: str, model: str, version: str) -> int:
    if version == "latest":
        versions = artifacts.list_versions(store, model)
        if not versions:
            raise FileNotFoundError(f"model {model} has no finished versions in {store}")
        return versions[-1]
    return int(version)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modelops_runtime evaluate", description=__doc__)
    parser.add_argument("--store", required=True, help="artifact store URI")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--version", required=True, help="version number or 'latest'")
    parser.add_argument("--data", required=True, help="dataset URI (folder of shards)")
    parser.add_argument("--format", default="parquet", choices=[f.value for f in DataFormat])
    parser.add_argument("--label", help="label column; the one recorded at training when omitted")
    parser.add_argument("--part", default="all", choices=["all", "validation", "train"],
                        help="evaluate on every example, or one side of the seeded split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (with --part)")
    parser.add_argument("--validation-split", type=float, default=0.2)
    args = parser.parse_args(argv)
    folder = artifacts.version_uri(args.store, args.model, resolve_version(args.store, args.model, args.version))
    predictor = load_predictor(folder)
    plan = data_plan(predictor.card, args.data, DataFormat(args.format), args.label or recorded_label(folder), args.seed, args.validation_split)
    print(json.dumps(evaluate_predictor(predictor, plan, args.part), sort_keys=True))
    return 0
