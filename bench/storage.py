#!/usr/bin/env python3
"""Benchmark training from s3:// against training from file:// on the same shards.

    python bench/storage.py [--rows 100000] [--shards 4] [--epochs 3] [--rounds 2] [--repeats 3]
                            [--sections throughput,memory,coldstart] [--json out.json]

The S3 server is SeaweedFS (`weed mini`, tests/s3_server.py, built by
.ci/setup.d/seaweedfs.sh), started by the bench on loopback with its Prometheus metrics
on. The shards are bench/training.py's (synthetic 10-class rows, 64 float32 features,
parquet), written to a folder and uploaded under s3://bench/.

- throughput: a fresh process per run, file:// and s3:// taking turns (file:// first
  and last, --rounds s3:// runs; each rate is the median over all of a storage's epochs:
  other load on a shared machine drifts), each streaming its shards through the
  runtime's pipeline (`train_batches`: chunks, hashed split, standardisation, shuffle
  buffer; the next shard prefetched on S3) into an MLP 64-256-256-10 with Adam, batch 256, one torch thread, for --epochs epochs.
  Reported per epoch: samples/s from the first batch on (once the first shard is
  fetched; goal S3 >= 0.9x file://), the wait for that first batch, and, on S3, the bytes
  the server sent during the epoch, from SeaweedFS's own counter
  `SeaweedFS_s3_bucket_traffic_sent_bytes_total` (goal: the dataset's size, each byte
  once per epoch);
- memory: peak RSS of one epoch streamed from S3 at 1x and 10x the shards (10 copies),
  each in a fresh process, sampled while streaming as bench/training.py does on file://
  (goal: within 10 %);
- coldstart: a version trained here, put in a file:// store and an s3:// store; the time
  from spawning `python -m modelops_runtime serve` to its readiness answering 200, for
  each store (the server's load path: card, weights, predictor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.training import BATCH, CLASSES, FEATURES, HIDDEN, LR, make_shards, peer_mlp, spec  # noqa: E402
from tests.s3_server import S3Server, free_ports  # noqa: E402

BUCKET = "bench"
SENT = f'SeaweedFS_s3_bucket_traffic_sent_bytes_total{{bucket="{BUCKET}"}}'


class MeteredS3Server(S3Server):
    """The tests' SeaweedFS, with its Prometheus metrics served on a free port."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root, [BUCKET])
        self.metrics_port = free_ports(1)[0]
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [*super().command(), f"-metricsPort={self.metrics_port}"]


def sent_bytes(metrics_url: str) -> float:
    """Bytes the S3 gateway has sent from the bench's bucket (object bodies), by its own count."""
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(SENT):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _plan(uri: str) -> Any:
    from modelops.api.training import DataFormat, Task
    from modelops_runtime.data.pipeline import DataPlan
    from modelops_runtime.data.shards import snapshot

    return DataPlan(
        uri=uri,
        format=DataFormat.PARQUET,
        shards=snapshot(uri, DataFormat.PARQUET).shards,
        features=[f"f{j}" for j in range(FEATURES)],
        label="target",
        sequence=None,
        task=Task.CLASSIFICATION,
        validation_split=0.1,
    )


def train_child(uri: str, epochs: int, metrics_url: str | None) -> None:
    """Stream `epochs` epochs of the pipeline into an MLP; print a JSON line per run."""
    import dataclasses

    import torch
    from torch import nn

    from modelops_runtime.data.pipeline import survey, train_batches

    torch.set_num_threads(1)
    torch.manual_seed(0)
    plan = _plan(uri)
    found = survey(plan)
    plan = dataclasses.replace(plan, scaling=found.scaling, classes=found.classes)
    model = peer_mlp(FEATURES, HIDDEN, CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    out = []
    for epoch in range(1, epochs + 1):
        before = sent_bytes(metrics_url) if metrics_url else None
        started = time.perf_counter()
        first: float | None = None
        samples = after_first = 0
        for x_np, y_np in train_batches(plan, 0, 1, epoch, BATCH):
            if first is None:
                first = time.perf_counter()
            else:
                after_first += len(x_np)
            samples += len(x_np)
            loss = nn.functional.cross_entropy(
                model(torch.from_numpy(x_np)), torch.from_numpy(y_np)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        ended = time.perf_counter()
        assert first is not None
        out.append(
            {
                "samples": samples,
                "samples_per_second": after_first / (ended - first),
                "epoch_samples_per_second": samples / (ended - started),
                "first_batch_s": first - started,
                "sent_bytes": (sent_bytes(metrics_url) - before)
                if metrics_url and before is not None
                else None,
            }
        )
    print(json.dumps({"epochs": out, "dataset_bytes": sum(s.size for s in plan.shards)}))


def memory_child(uri: str) -> None:
    """One epoch of training batches streamed from `uri`; peak RSS sampled while streaming
    (as bench/training.py does: the process high-water mark is set by importing torch)."""
    import dataclasses

    import psutil

    from modelops_runtime.data.pipeline import survey, train_batches

    plan = _plan(uri)
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    found = survey(plan)
    plan = dataclasses.replace(plan, scaling=found.scaling, classes=found.classes)
    rows = 0
    for x, _ in train_batches(plan, 0, 1, epoch=1, batch_size=BATCH):
        rows += len(x)
        peak = max(peak, process.memory_info().rss)
    mib = 1024 * 1024
    print(
        json.dumps(
            {
                "rows": rows,
                "shards": len(plan.shards),
                "peak_rss_mib": peak / mib,
                "before_mib": before / mib,
                "growth_mib": (peak - before) / mib,
            }
        )
    )


def child(env: dict[str, str], *argv: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def upload(server: S3Server, folder: Path, prefix: str, copies: int = 1) -> None:
    client = server.client()
    for copy in range(copies):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            key = f"{prefix}/{f'c{copy:03d}-' if copies > 1 else ''}{name}"
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())


def throughput(
    env: dict[str, str], data: Path, server: MeteredS3Server, epochs: int, rounds: int
) -> dict[str, Any]:
    def run(uri: str, metered: bool) -> dict[str, Any]:
        argv = ["--train-child", uri, "--epochs", str(epochs)]
        return child(env, *argv, *(["--metrics", server.metrics_url] if metered else []))

    # file, s3, file, s3, ..., file: each storage's rate is the median over all its epochs,
    # so a minute of other load on a shared machine moves neither much.
    files, s3s = [run(data.as_uri(), False)], []
    for _ in range(rounds):
        s3s.append(run(f"s3://{BUCKET}/data", True))
        files.append(run(data.as_uri(), False))
    file_rate = statistics.median(e["samples_per_second"] for r in files for e in r["epochs"])
    s3_rate = statistics.median(e["samples_per_second"] for r in s3s for e in r["epochs"])
    sent = [e["sent_bytes"] for r in s3s for e in r["epochs"]]
    dataset = s3s[0]["dataset_bytes"]
    return {
        "file": {"samples_per_second": file_rate, "runs": files},
        "s3": {"samples_per_second": s3_rate, "runs": s3s},
        "ratio_s3_over_file": s3_rate / file_rate,
        "dataset_bytes": dataset,
        "sent_bytes_per_epoch": sent,
        "reads_per_byte_per_epoch": [b / dataset for b in sent],
    }


def memory(env: dict[str, str], data: Path, server: S3Server) -> dict[str, Any]:
    upload(server, data, "x1")
    upload(server, data, "x10", copies=10)
    one = child(env, "--memory-child", f"s3://{BUCKET}/x1")
    ten = child(env, "--memory-child", f"s3://{BUCKET}/x10")
    return {
        "x1": one,
        "x10": ten,
        "peak_ratio_x10_over_x1": ten["peak_rss_mib"] / one["peak_rss_mib"],
    }


def coldstart(
    env: dict[str, str], data: Path, server: S3Server, work: Path, repeats: int
) -> dict[str, Any]:
    from modelops.api.training import TrainingJob
    from modelops_runtime.train import job
    from tests.runtime.serve_helpers import ServerProcess

    store = work / "store"
    result = job.run(
        TrainingJob.model_validate(spec(data, store, 1, 1)), "coldstart", use_ray=False
    )
    version = Path(result.ref.uri.removeprefix("file://"))
    upload(server, version, f"models/bench/{version.name}")
    stores = {"file": store.as_uri(), "s3": f"s3://{BUCKET}/models"}
    seconds: dict[str, list[float]] = {name: [] for name in stores}
    for attempt in range(repeats):
        for name, uri in stores.items():
            started = time.monotonic()
            args = ["--store", uri, "--model", "bench", "--version", str(result.ref.version)]
            with ServerProcess(args, work / f"serve-{name}-{attempt}.log", env=env):
                seconds[name].append(time.monotonic() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "seconds": seconds,
        "median_s": median,
        "s3_minus_file_s": median["s3"] - median["file"],
        "weights_bytes": (version / "model.safetensors").stat().st_size,
    }


def report(results: dict[str, Any]) -> None:
    if "throughput" in results:
        t = results["throughput"]
        print(
            f"throughput file://  {t['file']['samples_per_second']:>8.0f} samples/s (after the first batch, median epoch)"
        )
        print(
            f"throughput s3://    {t['s3']['samples_per_second']:>8.0f} samples/s   ratio s3/file {t['ratio_s3_over_file']:.2f}   "
            f"first batch after {statistics.median(e['first_batch_s'] for r in t['s3']['runs'] for e in r['epochs']):.2f} s (file "
            f"{statistics.median(e['first_batch_s'] for r in t['file']['runs'] for e in r['epochs']):.2f} s)"
        )
        reads = ", ".join(f"{r:.3f}" for r in t["reads_per_byte_per_epoch"])
        print(
            f"bytes sent by the server per epoch  {[int(b) for b in t['sent_bytes_per_epoch']]} of a "
            f"{t['dataset_bytes']}-byte dataset: {reads} reads per byte"
        )
    if "memory" in results:
        m = results["memory"]
        print(
            f"s3 pipeline peak RSS  x1 {m['x1']['peak_rss_mib']:.0f} MiB ({m['x1']['rows']} rows, +{m['x1']['growth_mib']:.0f} "
            f"streaming)   x10 {m['x10']['peak_rss_mib']:.0f} MiB ({m['x10']['rows']} rows, +{m['x10']['growth_mib']:.0f} "
            f"streaming)   ratio {m['peak_ratio_x10_over_x1']:.3f}"
        )
    if "coldstart" in results:
        c = results["coldstart"]
        print(
            f"cold start of serve   file:// {c['median_s']['file']:.2f} s   s3:// {c['median_s']['s3']:.2f} s   "
            f"(+{c['s3_minus_file_s']:.2f} s; medians of {len(c['seconds']['s3'])})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=2, help="s3:// runs, each between two file:// runs"
    )
    parser.add_argument("--repeats", type=int, default=3, help="cold starts per store")
    parser.add_argument("--sections", default="throughput,memory,coldstart")
    parser.add_argument("--json")
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--metrics", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        train_child(args.train_child, args.epochs, args.metrics)
        return 0
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    sections = set(args.sections.split(","))
    work = Path(tempfile.mkdtemp(prefix="modelops-bench-storage-"))
    server = MeteredS3Server(work / "seaweedfs")
    results: dict[str, Any] = {
        "rows": args.rows,
        "shards": args.shards,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
    }
    try:
        server.start()
        results["server_start_s"] = server.start_seconds
        data = work / "data"
        make_shards(data, args.rows, args.shards)
        upload(server, data, "data")
        env = {
            **os.environ,
            **server.env(),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        if "throughput" in sections:
            results["throughput"] = throughput(env, data, server, args.epochs, args.rounds)
        if "memory" in sections:
            results["memory"] = memory(env, data, server)
        if "coldstart" in sections:
            os.environ.update(server.env())
            results["coldstart"] = coldstart(env, data, server, work, args.repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
