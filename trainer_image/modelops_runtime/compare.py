"""Two versions evaluated on the same data: `python -m modelops_runtime compare`.

The IncrementalUpdate gate runs this in one pod: the candidate (the update run's
version) and the current (serving) version are evaluated on the same examples, and
`{"candidate": {metrics}, "current": {metrics}}` is printed on stdout and, with
`--termination-log`, written where Kubernetes reads the container's termination
message, which the operator parses. `current` is null when no version is given.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.data.pipeline import DataPlan
from modelops_runtime.evaluate import (
    data_plan,
    evaluate_predictor,
    recorded_label,
    resolve_version,
)
from modelops_runtime.predictor import Predictor, load_predictor

# The kubelet keeps at most this many bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096


def _shape(predictor: Predictor, label: str | None) -> tuple[Any, ...]:
    card = predictor.card
    return (tuple(card.features), card.window, card.n_outputs, card.task, tuple(card.classes or ()), label)


def encode(report: dict[str, Any], keep: str | None = None, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """Compact JSON that fits a termination message; metrics other than `keep` are shed."""
    text = json.dumps(report, sort_keys=True, separators=(",", ":"))
    if len(text.encode()) <= limit:
        return text
    trimmed = {
        side: ({k: v for k, v in metrics.items() if k == keep} if isinstance(metrics, dict) else metrics)
        for side, metrics in report.items()
    }
    return json.dumps(trimmed, sort_keys=True, separators=(",", ":"))


def compare(
    store: str,
    model: str,
    candidate: str,
    current: str | None,
    data: str,
    fmt: DataFormat,
    label: str | None = None,
    part: str = "all",
    seed: int = 0,
    validation_split: float = 0.2,
) -> dict[str, Any]:
    """Metrics of both versions on the same examples of `data`."""
    report: dict[str, Any] = {"candidate": {}, "current": None}
    plan: DataPlan | None = None
    shape: tuple[Any, ...] | None = None
    for side, version in (("candidate", candidate), ("current", current)):
        if version is None:
            continue
        folder = artifacts.version_uri(store, model, resolve_version(store, model, version))
        predictor = load_predictor(folder)
        chosen = label or recorded_label(folder)
        if plan is None or shape != _shape(predictor, chosen):
            # One listing (and hashing) of the data serves both when they read it alike.
            plan = data_plan(predictor.card, data, fmt, chosen, seed, validation_split)
            shape = _shape(predictor, chosen)
        report[side] = evaluate_predictor(predictor, plan, part)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="modelops_runtime compare", description=__doc__)
    parser.add_argument("--store", required=True, help="artifact store URI")
    parser.add_argument("--model", required=True, help="model name")
    parser.add_argument("--candidate", required=True, help="candidate version (or 'latest')")
    parser.add_argument("--current", help="serving version to compare with")
    parser.add_argument("--data", required=True, help="evaluation dataset URI (folder of shards)")
    parser.add_argument("--format", default="parquet", choices=[f.value for f in DataFormat])
    parser.add_argument("--label", help="label column; each version's recorded one when omitted")
    parser.add_argument("--part", default="all", choices=["all", "validation", "train"],
                        help="every example, or one side of the seeded split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (with --part)")
    parser.add_argument("--validation-split", type=float, default=0.2)
    parser.add_argument("--metric", help="the metric kept when the report must be shortened")
    parser.add_argument("--termination-log", help="also write the report here (/dev/termination-log in a pod)")
    args = parser.parse_args(argv)
    report = compare(
        args.store, args.model, args.candidate, args.current, args.data, DataFormat(args.format),
        args.label, args.part, args.seed, args.validation_split,
    )
    text = encode(report, args.metric)
    print(text, flush=True)
    if args.termination_log:
        path = args.termination_log
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0
