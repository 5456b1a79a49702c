#!/usr/bin/env python3
"""Benchmark the incremental update: a warm start on 10% new data against a full retrain.

    python bench/incremental.py [--repeats 3] [--threads 1] [--cold] [--json] [--keep DIR]

Data: scikit-learn's digits as 10 training shards and a holdout shard
(`python -m modelops_runtime datasets digits DIR --shards 10`). Version 1 is
trained with the digits example recipe (examples/digits/trainingjob.yaml: 30 epochs,
early stopping) on the first 9 shards; then the 10th shard lands (10% new data) and
the same model is brought up to date in two ways, both with the runtime's train CLI
(`python -m modelops_runtime train --spec ... --local`: one process, no Ray; Ray's
start-up would add the same seconds to both and hide the difference):

- incremental: the child TrainingJob spec an IncrementalUpdate creates
  (`modelops.lifecycle.update.child_training_spec`, the API's default strategy:
  fine-tune 3 epochs on the delta plus a 20% replay of the older shards, learning
  rate x0.5), warm-started from version 1;
- full retrain: the recipe as it is, from scratch on all 10 shards.

Time: the CLI's `main` called in this process (imports already warm, so interpreter
and torch start-up are not counted), wall and CPU seconds, median of `--repeats`;
with `--cold`, one more run of each as a fresh `python -m` process (start-up
included) is reported beside it. Metric: accuracy of each new version on the holdout,
from `python -m modelops_runtime compare` (both versions on the same examples).
Targets: incremental wall time <= 20% of the full retrain's; accuracy within 0.5
points of it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from modelops.api.training import TrainingJob  # noqa: E402
from modelops.api.update import IncrementalUpdateSpec  # noqa: E402
from modelops.lifecycle.update import child_training_spec  # noqa: E402

TARGET_TIME_RATIO = 0.20
TARGET_METRIC_POINTS = 0.5
RECIPE = ROOT / "examples" / "digits" / "trainingjob.yaml"
SHARDS = 10


def _runtime(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelops_runtime", *args]


def prepare(root: Path) -> dict[str, str]:
    """Digits in 10 shards; the last one is held back as the new data."""
    data = root / "data"
    subprocess.run(
        _runtime("datasets", "digits", str(data), "--shards", str(SHARDS)),
        check=True,
        capture_output=True,
    )
    shards = sorted((data / "train").glob("*.parquet"))
    staged = root / "new"
    staged.mkdir()
    shutil.move(str(shards[-1]), staged / shards[-1].name)
    return {
        "train": f"file://{data / 'train'}",
        "holdout": f"file://{data / 'holdout'}",
        "store": f"file://{root / 'store'}",
        "new": str(staged / shards[-1].name),
        "train_dir": str(data / "train"),
    }


def recipe(paths: dict[str, str]) -> TrainingJob:
    document = yaml.safe_load(RECIPE.read_text())
    document["metadata"] = {"name": "digits-bench"}
    spec = document["spec"]
    spec["data"]["uri"] = paths["train"]
    spec["data"]["holdoutUri"] = paths["holdout"]
    spec["output"]["storeUri"] = paths["store"]
    return TrainingJob.model_validate(document)


def write_spec(job: TrainingJob, path: Path) -> str:
    path.write_text(yaml.safe_dump(job.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return str(path)


def train_in_process(spec: str, version: int) -> tuple[float, float]:
    """The train CLI's main in this process: (wall s, CPU s)."""
    from modelops_runtime.train import cli

    args = ["--spec", spec, "--version", str(version), "--job-id", f"bench-{version}", "--local"]
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    if code != 0:
        raise RuntimeError(f"train exited with {code}")
    return time.perf_counter() - wall, time.process_time() - cpu


def train_cold(spec: str, version: int, threads: int) -> tuple[float, float]:
    """A fresh `python -m modelops_runtime train --local` process: (wall s, CPU s)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    args = ["train", "--spec", spec, "--version", str(version), "--job-id", f"cold-{version}"]
    before = os.times()
    wall = time.perf_counter()
    subprocess.run(_runtime(*args, "--local"), check=True, capture_output=True, env=env, cwd=ROOT)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return time.perf_counter() - wall, cpu


def _rows(uri: str) -> int:
    import pyarrow.parquet as pq

    folder = Path(uri.removeprefix("file://"))
    return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.glob("*.parquet"))


def accuracy(paths: dict[str, str], candidate: int, current: int) -> tuple[float, float]:
    from modelops.api.training import DataFormat
    from modelops_runtime.compare import compare

    report = compare(
        paths["store"], "digits", str(candidate), str(current), paths["holdout"], DataFormat.PARQUET
    )
    return float(report["candidate"]["accuracy"]), float(report["current"]["accuracy"])


def run(repeats: int, threads: int, cold: bool, keep: Path | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    root = keep or Path(tempfile.mkdtemp(prefix="modelops-bench-incremental-"))
    root.mkdir(parents=True, exist_ok=True)
    paths = prepare(root)
    base = recipe(paths)
    update = IncrementalUpdateSpec.model_validate({"trainingJobRef": {"name": "digits-bench"}})
    incremental = base.model_copy(
        update={"spec": child_training_spec(base.spec, update, promoted_version=1)}
    )
    base_spec = write_spec(base, root / "recipe.yaml")
    incremental_spec = write_spec(incremental, root / "incremental.yaml")

    print(f"data: {root}; version 1 on {SHARDS - 1} of {SHARDS} shards ...", file=sys.stderr)
    v1_wall, v1_cpu = train_in_process(base_spec, 1)
    shutil.move(paths["new"], Path(paths["train_dir"]) / Path(paths["new"]).name)

    version = 1
    times: dict[str, list[tuple[float, float]]] = {"incremental": [], "full": []}
    accuracies: dict[str, list[float]] = {"incremental": [], "full": []}
    for repeat in range(repeats):
        pair = {}
        for mode, spec in (("incremental", incremental_spec), ("full", base_spec)):
            version += 1
            print(f"repeat {repeat + 1}/{repeats}: {mode} -> v{version}", file=sys.stderr)
            times[mode].append(train_in_process(spec, version))
            pair[mode] = version
        inc, full = accuracy(paths, pair["incremental"], pair["full"])
        accuracies["incremental"].append(inc)
        accuracies["full"].append(full)
    _, v1_accuracy = accuracy(paths, version, 1)

    cold_times: dict[str, tuple[float, float]] = {}
    if cold:
        for mode, spec in (("incremental", incremental_spec), ("full", base_spec)):
            version += 1
            print(f"cold: {mode} -> v{version}", file=sys.stderr)
            cold_times[mode] = train_cold(spec, version, threads)

    def median(mode: str, index: int) -> float:
        return statistics.median(t[index] for t in times[mode])

    result: dict[str, Any] = {
        "dataset": f"scikit-learn digits: {SHARDS} training shards ({_rows(paths['train'])} rows)"
        f" + a holdout shard ({_rows(paths['holdout'])} rows)",
        "new_data": "1 shard of 10 (10%)",
        "strategy": update.strategy.model_dump(mode="json", by_alias=True),
        "threads": threads,
        "repeats": repeats,
        "version_1": {"wall_s": v1_wall, "cpu_s": v1_cpu, "holdout_accuracy": v1_accuracy},
        "incremental": {
            "wall_s": median("incremental", 0),
            "cpu_s": median("incremental", 1),
            "holdout_accuracy": statistics.mean(accuracies["incremental"]),
            "runs": times["incremental"],
        },
        "full": {
            "wall_s": median("full", 0),
            "cpu_s": median("full", 1),
            "holdout_accuracy": statistics.mean(accuracies["full"]),
            "runs": times["full"],
        },
    }
    inc, full = result["incremental"], result["full"]
    result["time_ratio"] = inc["wall_s"] / full["wall_s"]
    result["cpu_ratio"] = inc["cpu_s"] / full["cpu_s"]
    result["accuracy_gap_points"] = 100 * (full["holdout_accuracy"] - inc["holdout_accuracy"])
    if cold_times:
        result["cold"] = {
            mode: {"wall_s": wall, "cpu_s": cpu} for mode, (wall, cpu) in cold_times.items()
        }
        result["cold"]["time_ratio"] = cold_times["incremental"][0] / cold_times["full"][0]
    result["targets_met"] = (
        result["time_ratio"] <= TARGET_TIME_RATIO
        and result["accuracy_gap_points"] <= TARGET_METRIC_POINTS
    )
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> str:
    inc, full, v1 = result["incremental"], result["full"], result["version_1"]
    lines = [
        f"dataset: {result['dataset']}; new data: {result['new_data']}",
        f"strategy: {result['strategy']}; torch threads: {result['threads']}; "
        f"median of {result['repeats']}",
        f"{'':<14}{'wall s':>9}{'CPU s':>9}{'holdout accuracy':>18}",
        f"{'version 1':<14}{v1['wall_s']:>9.2f}{v1['cpu_s']:>9.2f}{v1['holdout_accuracy']:>18.4f}",
        f"{'incremental':<14}{inc['wall_s']:>9.2f}{inc['cpu_s']:>9.2f}"
        f"{inc['holdout_accuracy']:>18.4f}",
        f"{'full retrain':<14}{full['wall_s']:>9.2f}{full['cpu_s']:>9.2f}"
        f"{full['holdout_accuracy']:>18.4f}",
        f"time ratio (incremental / full): wall {result['time_ratio']:.3f}, "
        f"CPU {result['cpu_ratio']:.3f} (target <= {TARGET_TIME_RATIO})",
        f"accuracy gap (full - incremental): {result['accuracy_gap_points']:+.2f} points "
        f"(target <= {TARGET_METRIC_POINTS})",
    ]
    if "cold" in result:
        cold = result["cold"]
        lines.append(
            f"cold processes (start-up included): incremental {cold['incremental']['wall_s']:.2f} s,"
            f" full {cold['full']['wall_s']:.2f} s, ratio {cold['time_ratio']:.3f}"
        )
    lines.append(f"targets met: {result['targets_met']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, same for both")
    parser.add_argument("--cold", action="store_true", help="also time fresh processes")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    result = run(args.repeats, args.threads, args.cold, args.keep)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
