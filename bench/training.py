#!/usr/bin/env python3
"""Benchmark the training runtime against a plain single-process torch loop.

    python bench/training.py [--rows 100000] [--epochs 3] [--ray-workers 1,2] [--json out.json]
                             [--sections steady,e2e] [--e2e-jobs small,medium]

Same model (MLP 64->256->256->10, Adam, batch 256), same data (synthetic 10-class
rows in 4 parquet shards), same thread count (1 torch thread per worker) for:
  - plain: the whole dataset as one in-memory tensor, a randperm per epoch, slicing
    batches: the fastest a single process can feed this model;
  - modelops in-process: the runtime's loop streaming the shards (chunks, hashed
    validation split, standardisation, bounded shuffle buffer, checkpoint per epoch);
  - modelops on Ray Train: the same loop on 1 and 2 workers x 1 CPU (TorchTrainer,
    gloo); per worker, 2 workers on a 2-CPU machine share it with the driver.
Reported: steady-state training samples/s (epochs after the first, median) and the
ratio per worker to plain (target >= 0.9), by the wall clock and by the training
thread's CPU time (the loop's own cost, whatever else the machine runs; it leaves out
time spent waiting in all-reduce); fixed overhead from the call to the first
optimizer step; peak RSS of the data pipeline streaming 1x and 10x the shards, each
in a fresh subprocess (target: within 10% of each other).

End to end (`--sections e2e`), what a user waits for: each variant a fresh process from
spawn to stored version, against a plain torch script doing the same work (read the
parquet, standardise, train with a validation pass per epoch, save the weights), all
with one torch thread:
  - small: breast cancer (scikit-learn's copy, 426 training rows x 30 features), MLP
    64-32, Adam, batch 32, 60 epochs; the ratio goals are <= 3x on Ray, <= 1.2x in-process;
  - medium: 200 k synthetic rows x 30 features, 10 classes, MLP 128-64, batch 64
    (about 30 s of plain torch on a quiet 2-core machine); the goal is <= 1.2x on Ray.
Variants: `train` (in-process: one worker, no search), `train --ray` (Ray Train,
1 worker, a Ray started by the command), for the small job 2 Ray workers, and "joined":
`train --ray-address` on a fresh Ray head that is already serving, as in a TrainingJob's
head pod and in `modelops run` (timed from the head being ready). Reported:
wall seconds and the ratio to the plain script, spawn to first epoch, per-epoch overhead
(the time between epoch starts less the epoch's training and validation; goal <= 20 ms)
and the time from the last epoch's start to the process's exit.
"""

from __future__ import annotations

import argparse
import itertools
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

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 64
CLASSES = 10
HIDDEN = [256, 256]
BATCH = 256
LR = 1e-3


def make_shards(folder: Path, rows: int, shards: int, seed: int = 0) -> None:
    """Separable-ish synthetic classes: class centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, FEATURES)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(rows), shards)):
        y = rng.integers(0, CLASSES, len(part))
        x = centres[y] + rng.normal(0, 2.0, (len(part), FEATURES)).astype(np.float32)
        columns = {f"f{j}": x[:, j] for j in range(FEATURES)}
        columns["target"] = y.astype(np.int64)
        pq.write_table(pa.table(columns), folder / f"part-{i:05d}.parquet", row_group_size=8192)


def spec(data: Path, store: Path, epochs: int, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "bench"},
        "spec": {
            "model": {"architecture": "mlp", "task": "classification", "hiddenLayers": HIDDEN},
            "data": {"uri": data.as_uri(), "label": "target", "validationSplit": 0.1},
            "training": {"epochs": epochs, "batchSize": BATCH, "seed": 0, "optimizer": {"name": "adam", "learningRate": LR}},
            "resources": {"workers": workers, "cpusPerWorker": "1"},
            "output": {"modelName": "bench", "storeUri": store.as_uri()},
        },
    }


def peer_mlp(inputs: int, hidden: list[int], outputs: int) -> Any:
    """The plain-torch peer's network: Linear+ReLU per hidden width, then the output layer."""
    from torch import nn

    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def plain_loop(data: Path, epochs: int) -> dict[str, float]:
    """The peer: everything in memory, no checkpoints, no streaming."""
    import pandas as pd
    import torch
    from torch import nn

    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    frame = pd.read_parquet(data)
    x = torch.tensor(frame[[f"f{j}" for j in range(FEATURES)]].to_numpy(np.float32))
    y = torch.tensor(frame["target"].to_numpy())
    x = (x - x.mean(0)) / x.std(0)
    model = peer_mlp(FEATURES, HIDDEN, CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    first_step = None
    rates, cpu_rates = [], []
    rows = int(len(x) * 0.9)  # the same share the runtime trains on (10% validation)
    for _ in range(epochs):
        order = torch.randperm(len(x))[:rows]
        tick, cpu_tick = time.perf_counter(), time.thread_time()
        for start in range(0, rows - BATCH + 1, BATCH):
            index = order[start : start + BATCH]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if first_step is None:
                first_step = time.perf_counter() - started
        rates.append((rows - rows % BATCH) / (time.perf_counter() - tick))
        cpu_rates.append((rows - rows % BATCH) / (time.thread_time() - cpu_tick))
    return {
        "samples_per_second": statistics.median(rates[1:]),
        "samples_per_cpu_second": statistics.median(cpu_rates[1:]),
        "overhead_s": float(first_step or 0.0),
    }


def modelops_run(data: Path, store: Path, epochs: int, workers: int, use_ray: bool) -> dict[str, float]:
    from modelops.api.training import TrainingJob
    from modelops_runtime.train import job

    training_job = TrainingJob.model_validate(spec(data, store, epochs, workers))
    started = time.time()
    result = job.run(training_job, f"bench-{workers}-{int(started)}", use_ray=use_ray)
    history = result.record["epochs"]
    steady = statistics.median(e["samples_per_second"] for e in history[1:])
    # Rank 0's thread CPU time; every worker does the same work per step.
    cpu = statistics.median(e["samples"] / e["train_cpu_seconds"] for e in history[1:])
    return {
        "samples_per_second": steady,
        "per_worker": steady / workers,
        "samples_per_cpu_second": cpu,
        "overhead_s": history[0]["first_step_at"] - started,
        "accuracy_val": history[-1]["metrics"]["val_accuracy"],
    }


def memory_child(data: str) -> None:
    """Stream one epoch of training batches; print rows and peak RSS (run in a subprocess)."""
    from modelops.api.training import DataFormat, Task
    from modelops_runtime.data.pipeline import DataPlan, survey, train_batches
    from modelops_runtime.data.shards import snapshot

    manifest = snapshot(Path(data).as_uri(), DataFormat.PARQUET)
    plan = DataPlan(
        uri=Path(data).as_uri(), format=DataFormat.PARQUET, shards=manifest.shards,
        features=[f"f{j}" for j in range(FEATURES)], label="target", sequence=None,
        task=Task.CLASSIFICATION, validation_split=0.1,
    )
    # Importing torch alone peaks above the pipeline's needs, so the process high-water
    # mark (ru_maxrss) would hide them: sample the current RSS while streaming instead.
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    found = survey(plan)
    plan = DataPlan(**{**plan.__dict__, "scaling": found.scaling, "classes": found.classes})
    rows = 0
    for x, _ in train_batches(plan, 0, 1, epoch=1, batch_size=BATCH):
        rows += len(x)
        peak = max(peak, process.memory_info().rss)
    mib = 1024 * 1024
    print(json.dumps({"rows": rows, "peak_rss_mib": peak / mib, "before_mib": before / mib, "growth_mib": (peak - before) / mib}))


def memory(data: Path, copies: int, workdir: Path) -> dict[str, float]:
    folder = workdir / f"x{copies}"
    folder.mkdir()
    for copy in range(copies):
        for shard in sorted(data.glob("*.parquet")):
            shutil.copy(shard, folder / f"c{copy:03d}-{shard.name}")
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(folder)], capture_output=True, text=True, check=True)
    shutil.rmtree(folder)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


SMALL_EPOCHS, SMALL_BATCH, SMALL_HIDDEN = 60, 32, [64, 32]
MEDIUM_ROWS, MEDIUM_FEATURES, MEDIUM_CLASSES = 200_000, 30, 10
MEDIUM_EPOCHS, MEDIUM_BATCH, MEDIUM_HIDDEN = 12, 64, [128, 64]


def e2e_jobs(work: Path) -> dict[str, dict[str, Any]]:
    """The two jobs' data on disk and their training settings."""
    from sklearn.datasets import load_breast_cancer

    jobs: dict[str, dict[str, Any]] = {}
    frame = load_breast_cancer(as_frame=True).frame.rename(columns=lambda c: c.replace(" ", "_"))
    small = work / "e2e-small"
    small.mkdir(parents=True)
    frame.sample(frac=1.0, random_state=0).iloc[:426].to_parquet(small / "part-00000.parquet")
    jobs["small"] = {"data": small, "epochs": SMALL_EPOCHS, "batch": SMALL_BATCH, "hidden": SMALL_HIDDEN}
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (MEDIUM_CLASSES, MEDIUM_FEATURES)).astype(np.float32)
    y = rng.integers(0, MEDIUM_CLASSES, MEDIUM_ROWS)
    x = centres[y] + rng.normal(0, 2.0, (MEDIUM_ROWS, MEDIUM_FEATURES)).astype(np.float32)
    medium = work / "e2e-medium"
    medium.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(MEDIUM_ROWS), 4)):
        columns = {f"f{j}": x[part, j] for j in range(MEDIUM_FEATURES)}
        columns["target"] = y[part].astype(np.int64)
        pq.write_table(pa.table(columns), medium / f"part-{i:05d}.parquet", row_group_size=16384)
    jobs["medium"] = {"data": medium, "epochs": MEDIUM_EPOCHS, "batch": MEDIUM_BATCH, "hidden": MEDIUM_HIDDEN}
    return jobs


def e2e_manifest(job: dict[str, Any], store: Path, workers: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "e2e"},
        "spec": {
            "model": {"architecture": "mlp", "task": "classification", "hiddenLayers": job["hidden"]},
            "data": {"uri": Path(job["data"]).as_uri(), "label": "target", "validationSplit": 0.2},
            "training": {"epochs": job["epochs"], "batchSize": job["batch"], "seed": 0,
                         "optimizer": {"name": "adam", "learningRate": LR}},
            "resources": {"workers": workers, "cpusPerWorker": "1"},
            "output": {"modelName": "e2e", "storeUri": store.as_uri()},
        },
    }


def plain_child(data: str, epochs: int, batch: int, hidden: str, out: str) -> None:
    """The peer, as a user would write it: read, standardise, train and validate, save."""
    import pandas as pd
    import torch
    from safetensors.torch import save_file
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    frame = pd.read_parquet(data)
    features = [c for c in frame.columns if c != "target"]
    x = torch.tensor(frame[features].to_numpy(np.float32))
    y = torch.tensor(frame["target"].to_numpy(np.int64))
    order = torch.randperm(len(x))
    cut = int(len(x) * 0.8)
    train, val = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    model = peer_mlp(len(features), [int(h) for h in hidden.split(",")], int(y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(epochs):
        model.train()
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(shuffled) - batch + 1, batch):
            index = shuffled[start : start + batch]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x[val]).argmax(1) == y[val]).float().mean())
    save_file({**model.state_dict(), "input.mean": mean, "input.std": std}, out)
    print(json.dumps({"val_accuracy": accuracy}))


def _overheads(history: list[dict[str, Any]]) -> list[float]:
    """Per epoch: the time to the next epoch's start less the epoch's own work."""
    return [
        after["started_at"] - epoch["started_at"] - epoch["train_seconds"] - epoch.get("validate_seconds", 0.0)
        for epoch, after in itertools.pairwise(history)
    ]


def e2e_variant(
    name: str, job: dict[str, Any], work: Path, argv_extra: list[str], workers: int, env_extra: dict[str, str] | None = None
) -> dict[str, Any]:
    folder = work / f"run-{name}"
    folder.mkdir()
    manifest = folder / "job.yaml"
    manifest.write_text(json.dumps(e2e_manifest(job, folder / "store", workers)))
    env = {**(env_extra or os.environ), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    spawned = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "modelops_runtime", "train", "--spec", str(manifest), "--job-id", name, *argv_extra],
        capture_output=True, text=True, env=env, check=False,
    )
    ended = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1].removeprefix("MODELOPS_RESULT "))
    record = json.loads((Path(result["uri"].removeprefix("file://")) / "training.json").read_text())
    history = record["epochs"]
    overheads = _overheads(history)
    return {
        "wall_s": ended - spawned,
        "to_first_epoch_s": history[0]["started_at"] - spawned,
        "epochs_s": history[-1]["started_at"] - history[0]["started_at"],
        "after_last_epoch_s": ended - history[-1]["started_at"],
        "train_s": sum(e["train_seconds"] for e in history),
        "per_epoch_overhead_ms": 1000 * statistics.mean(overheads) if overheads else 0.0,
        "per_epoch_overhead_median_ms": 1000 * statistics.median(overheads) if overheads else 0.0,
        "output_lines": len(out.stdout.splitlines()) + len(out.stderr.splitlines()),
        "accuracy": result["metrics"].get("accuracy"),
    }


def e2e_plain(job: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    spawned = time.time()
    subprocess.run(
        [sys.executable, __file__, "--plain-child", str(job["data"]), "--epochs", str(job["epochs"]),
         "--plain-batch", str(job["batch"]), "--plain-hidden", ",".join(map(str, job["hidden"])),
         "--plain-out", str(work / f"plain-{tag}.safetensors")],
        capture_output=True, text=True, check=True,
    )
    return {"wall_s": time.time() - spawned}


class RayHeadProcess:
    """A Ray head as the operator's head pod and `modelops run` start one, for the joined variants."""

    def __init__(self) -> None:
        import secrets
        import socket

        from modelops.local.rayhead import free_port, head_argv, head_env
        from modelops_runtime.train.distributed import TRAIN_ENV

        self.port = free_port("127.0.0.1")
        # Ray's socket paths must fit 107 bytes: a short folder of its own.
        self.temp_dir = tempfile.mkdtemp(prefix="mo-ray-", dir="/tmp")
        self.env = {**os.environ, **TRAIN_ENV, **head_env(secrets.token_hex(32))}
        self.process = subprocess.Popen(
            head_argv(sys.executable, "127.0.0.1", self.port, 2, Path(self.temp_dir)),
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        started = time.time()
        while time.time() - started < 120:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Ray head exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.2)
        # The head's GCS accepts connections before its raylet has registered; a job that
        # joins now waits for it, so readiness is a client that has joined once.
        subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{self.port}'); ray.shutdown()"],
            env=self.env, check=True, capture_output=True, timeout=120,
        )

    def argv(self) -> list[str]:
        return ["--ray-address", f"127.0.0.1:{self.port}"]

    def stop(self) -> None:
        import signal

        # The whole session: `ray start --block` leaves its GCS and raylet to a signal handler
        # that can take a minute.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        subprocess.run(["pkill", "-9", "-f", self.temp_dir], check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# Ray Train's own floor, in a process that imports nothing else: join the head and run a
# TorchTrainer whose workers do nothing. The driver sets the runtime's Ray Train settings.
NOOP_FIT = """
import sys, tempfile
from modelops_runtime.train.distributed import tune_environment
tune_environment()
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
ray.init(address=sys.argv[1], include_dashboard=False, logging_level="WARNING")
TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=int(sys.argv[2])),
             run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="modelops-bench-noop-"))).fit()
"""


def e2e_noop_fit(workers: int) -> dict[str, Any]:
    """Spawn to return of a no-op fit() on a fresh head: what Ray Train costs before any work."""
    head = RayHeadProcess()
    try:
        spawned = time.time()
        subprocess.run(
            [sys.executable, "-c", NOOP_FIT, f"127.0.0.1:{head.port}", str(workers)],
            env=head.env, capture_output=True, text=True, check=True,
        )
        return {"wall_s": time.time() - spawned}
    finally:
        head.stop()


# (variant, extra argv, workers, joins a running head)
E2E_VARIANTS: dict[str, list[tuple[str, list[str], int, bool]]] = {
    "small": [
        ("in_process", [], 1, False), ("ray_1_worker", ["--ray"], 1, False), ("ray_2_workers", [], 2, False),
        ("joined_1_worker", [], 1, True), ("joined_2_workers", [], 2, True),
    ],
    "medium": [
        ("in_process", [], 1, False), ("ray_1_worker", ["--ray"], 1, False),
        ("joined_1_worker", [], 1, True), ("joined_2_workers", [], 2, True),
    ],
}  # fmt: skip


def e2e(work: Path, which: list[str]) -> dict[str, Any]:
    """Fresh processes, spawn to stored version; the peer runs before and after ours.

    The joined variants each start a fresh head first (as a TrainingJob's head pod is
    fresh) and time the job from the moment the head serves: head-pod-ready to stored
    version, with no Ray start in the job's own process.
    """
    jobs = e2e_jobs(work)
    out: dict[str, Any] = {}
    for name in which:
        job = jobs[name]
        plains = [e2e_plain(job, work, f"{name}-0")["wall_s"]]
        results: dict[str, Any] = {}
        for i, (variant, extra, workers, joined) in enumerate(E2E_VARIANTS[name]):
            head = RayHeadProcess() if joined else None
            try:
                argv = [*extra, *(head.argv() if head else [])]
                ours = e2e_variant(f"{name}-{variant}", job, work, argv, workers, head.env if head else None)
            finally:
                if head:
                    head.stop()
            plains.append(e2e_plain(job, work, f"{name}-{i + 1}")["wall_s"])
            peer = (plains[-2] + plains[-1]) / 2
            results[variant] = {**ours, "plain_wall_s": peer, "ratio": ours["wall_s"] / peer}
        out[name] = {"plain_wall_s": statistics.mean(plains), **results}
        if name == "small":
            # Once per run: the floor does not depend on the job.
            out["ray_train_floor"] = {f"noop_fit_{n}_workers": e2e_noop_fit(n) for n in (1, 2)}
    return out


def print_e2e(results: dict[str, Any]) -> None:
    for name, job in results.items():
        if name == "ray_train_floor":
            plain = results["small"]["plain_wall_s"]
            for variant, r in job.items():
                print(f"e2e Ray Train's floor: {variant} joining a fresh head {r['wall_s']:.1f} s "
                      f"({r['wall_s'] / plain:.2f}x the small job's plain script)")
            continue
        print(f"e2e {name:<7} plain torch script {job['plain_wall_s']:>7.1f} s")
        for variant, r in job.items():
            if not isinstance(r, dict):
                continue
            print(f"e2e {name:<7} {variant:<14} {r['wall_s']:>7.1f} s  ratio {r['ratio']:.2f}x   first epoch after "
                  f"{r['to_first_epoch_s']:.1f} s   epochs {r['epochs_s']:.1f} s (training {r['train_s']:.1f} s)   "
                  f"per-epoch overhead {r['per_epoch_overhead_ms']:.1f} ms (median {r['per_epoch_overhead_median_ms']:.1f})   "
                  f"last epoch to exit {r['after_last_epoch_s']:.1f} s   {r['output_lines']} output lines")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ray-workers", default="1,2", help="worker counts to run on Ray Train; empty to skip")
    parser.add_argument("--json")
    parser.add_argument("--sections", default="steady,e2e", help="steady (samples/s, memory), e2e (spawn to stored version)")
    parser.add_argument("--e2e-jobs", default="small,medium")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", help=argparse.SUPPRESS)
    parser.add_argument("--plain-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plain-hidden", help=argparse.SUPPRESS)
    parser.add_argument("--plain-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.plain_child:
        plain_child(args.plain_child, args.epochs, args.plain_batch, args.plain_hidden, args.plain_out)
        return 0
    sys.path.insert(0, str(ROOT))
    sections = set(args.sections.split(","))
    if "e2e" in sections:
        work = Path(tempfile.mkdtemp(prefix="modelops-bench-e2e-"))
        try:
            found = e2e(work, [j for j in args.e2e_jobs.split(",") if j])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print_e2e(found)
        if args.json:
            Path(args.json).with_suffix(".e2e.json").write_text(json.dumps(found, indent=2))
    if "steady" not in sections:
        return 0
    work = Path(tempfile.mkdtemp(prefix="modelops-bench-"))
    try:
        data = work / "data"
        make_shards(data, args.rows, 4)
        results: dict[str, Any] = {"rows": args.rows, "epochs": args.epochs, "cpus": os.cpu_count()}
        runs: list[tuple[str, int, bool]] = [("modelops_in_process", 1, False)]
        counts = [int(n) for n in args.ray_workers.split(",") if n]
        if counts:
            import ray

            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            # Ray runs its workers at nice 15 so its control processes stay responsive. In a
            # pod the workers have the CPUs to themselves; on a machine shared with other
            # jobs, nice 15 would measure the kernel's scheduler rather than the runtime.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
            runs += [(f"modelops_ray_{n}_workers", n, True) for n in counts]
        # The peer runs before and after each of ours, and each ratio uses the mean of its
        # two neighbours: other load on a shared machine drifts over minutes.
        before = plain_loop(data, args.epochs)
        plains = [before]
        for name, workers, use_ray in runs:
            ours = modelops_run(data, work / "store", args.epochs, workers, use_ray)
            after = plain_loop(data, args.epochs)
            plains.append(after)
            peer = {k: (before[k] + after[k]) / 2 for k in before}
            results[name] = {
                **ours,
                "peer_samples_per_second": peer["samples_per_second"],
                "ratio_per_worker": ours["per_worker"] / peer["samples_per_second"],
                "ratio_cpu": ours["samples_per_cpu_second"] / peer["samples_per_cpu_second"],
            }
            before = after
        if counts:
            ray.shutdown()
        results["plain"] = {k: statistics.mean(p[k] for p in plains) for k in plains[0]}
        one = memory(data, 1, work)
        ten = memory(data, 10, work)
        results["memory"] = {"x1": one, "x10": ten, "peak_ratio_x10_over_x1": ten["peak_rss_mib"] / one["peak_rss_mib"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    plain = results["plain"]
    print(f"plain torch loop          {plain['samples_per_second']:>8.0f} samples/s  {plain['samples_per_cpu_second']:>8.0f} per CPU-s"
          f"   first step after {plain['overhead_s']:.1f} s")
    for name, r in results.items():
        if name.startswith("modelops_"):
            print(f"{name:<25} {r['samples_per_second']:>8.0f} samples/s  {r['samples_per_cpu_second']:>8.0f} per CPU-s"
                  f"   ratio per worker {r['ratio_per_worker']:.2f} (wall) {r['ratio_cpu']:.2f} (CPU)"
                  f"   first step after {r['overhead_s']:.1f} s")
    m = results["memory"]
    print(f"pipeline peak RSS         x1 {m['x1']['peak_rss_mib']:.0f} MiB ({m['x1']['rows']} rows, +{m['x1']['growth_mib']:.0f} streaming)   "
          f"x10 {m['x10']['peak_rss_mib']:.0f} MiB ({m['x10']['rows']} rows, +{m['x10']['growth_mib']:.0f} streaming)   ratio {m['peak_ratio_x10_over_x1']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
