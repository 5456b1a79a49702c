"""Building TrainingJob manifests for the runtime tests, validated like any manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelops.api.training import TrainingJob
from modelops.api.validation import parse_resource


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def training_job(name: str, spec: dict[str, Any]) -> TrainingJob:
    resource, problems = parse_resource(
        {"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}
    )
    assert not problems, problems
    assert isinstance(resource, TrainingJob)
    return resource


def digits_spec(digits: Path, store: Path, **extra: Any) -> dict[str, Any]:
    base = {
        "model": {"architecture": "mlp", "task": "classification", "hiddenLayers": [128, 64], "dropout": 0.1},
        "data": {
            "uri": (digits / "train").as_uri(),
            "label": "target",
            "validationSplit": 0.2,
            "holdoutUri": (digits / "holdout").as_uri(),
        },
        "training": {
            "epochs": 12,
            "batchSize": 64,
            "seed": 7,
            "loss": "crossEntropy",
            "optimizer": {"name": "adam", "learningRate": 0.003, "weightDecay": 0.0001},
            "schedule": {"type": "cosine", "warmupEpochs": 1},
        },
        "resources": {"workers": 1},
        "output": {"modelName": "digits", "storeUri": store.as_uri()},
    }
    return merge(base, extra)


def series_spec(series: Path, store: Path, architecture: str, **extra: Any) -> dict[str, Any]:
    base = {
        "model": {"architecture": architecture, "task": "forecasting", "hiddenSize": 32, "numLayers": 1},
        "data": {
            "uri": (series / "train").as_uri(),
            "sequence": {"column": "value", "window": 24, "horizon": 1},
            "validationSplit": 0.2,
            "holdoutUri": (series / "holdout").as_uri(),
        },
        "training": {
            "epochs": 8,
            "batchSize": 32,
            "seed": 1,
            "loss": "mse",
            "optimizer": {"name": "adam", "learningRate": 0.005},
            "schedule": {"type": "step", "stepSize": 4, "gamma": 0.3},
        },
        "output": {"modelName": f"series-{architecture}", "storeUri": store.as_uri()},
    }
    return merge(base, extra)
