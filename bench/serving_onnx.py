#!/usr/bin/env python3
"""Benchmark serving the same MLP stored as ONNX vs as safetensors, and cold loads.

    python bench/serving_onnx.py [--seconds 6] [--rounds 3] [--rates 500,1500] [--json out.json]

One network, two stored versions of model `m`:
  - v1: the digits-sized MLP 64->128->64->10 (random weights, input scaling) as a
    built-in version, model.safetensors, served by today's path (a traced TorchScript
    graph on the forward thread);
  - v2: the same network's scores (scaling, MLP, softmax) exported with
    `torch.onnx.export` and brought in with `modelops import`, served by ONNX Runtime.
Both answer within 1e-5 of each other (checked first). Measured:
  - the batched forward alone (rows/s at batch 1 and 64, one thread, on the server's CPU);
  - each version behind its own `python -m modelops_runtime serve` (batching 64 rows /
    2 ms, both up at once, pinned to CPU 1): closed loop (64 keep-alive connections
    sending back to back, aiohttp, on CPU 0) in interleaved rounds, median reported;
    open loop at fixed rates (bench/serving.py's generator);
  - cold load: a fresh process from start to a loaded predictor (imports included),
    and a server from start to ready, for each version; `modelops import` of the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import (  # noqa: E402
    LOADGEN_CPU,
    MAX_BATCH,
    SERVER_CPU,
    _percentiles,
    _pin,
    free_port,
    open_loop_run,
    request_body,
    server,
)

INFER_PATH = "/v2/models/m/infer"
CLASSES = [f"c{i}" for i in range(10)]


def make_store(root: Path) -> tuple[str, dict[str, float]]:
    """v1 (safetensors) and v2 (the same network imported as ONNX); the import's timing."""
    import numpy as np
    import torch

    from modelops_runtime import artifacts
    from modelops_runtime.importer import Options, import_onnx
    from modelops_runtime.predictor import load_predictor
    from tests.runtime.serve_helpers import save_classifier

    store = f"file://{root / 'store'}"
    save_classifier(store, "m", 1, hidden=[128, 64])
    member = load_predictor(artifacts.version_uri(store, "m", 1)).members[0]
    for parameter in member.network.parameters():  # type: ignore[union-attr]
        parameter.requires_grad_(False)  # exported as constants

    class Scores(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return member.scores_tensor(x)  # type: ignore[union-attr]

    path = root / "mlp.onnx"
    torch.onnx.export(
        Scores().eval(),
        (torch.zeros(2, 64),),
        str(path),
        input_names=["x"],
        output_names=["probabilities"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    started = time.perf_counter()
    version = import_onnx(str(path), store, "m", Options(task=None, classes=CLASSES))
    timing = {"import_s": time.perf_counter() - started, "file_bytes": path.stat().st_size}
    rows = np.random.default_rng(1).random((256, 64), dtype=np.float32)
    a = load_predictor(artifacts.version_uri(store, "m", 1)).scores(rows)
    b = load_predictor(artifacts.version_uri(store, "m", version)).scores(rows)
    timing["max_abs_diff"] = float(np.abs(a - b).max())
    if version != 2 or timing["max_abs_diff"] > 1e-5:
        raise SystemExit(
            f"the ONNX version differs: v{version}, max |diff| {timing['max_abs_diff']}"
        )
    return store, timing


def forward_ceiling(store: str) -> dict[str, float]:
    """Rows/s of the bare forward at batch 1 and 64, one thread, on the server's CPU."""
    code = (
        "import time, json, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from modelops_runtime import artifacts\n"
        "from modelops_runtime.predictor import load_predictor\n"
        "from modelops_runtime.serve.compiled import traced\n"
        "out = {}\n"
        "for version, name in ((1, 'torch traced'), (2, 'onnx')):\n"
        f"    p = traced(load_predictor(artifacts.version_uri({store!r}, 'm', version)))\n"
        "    for rows in (1, %d):\n"
        "        x = np.random.rand(rows, 64).astype(np.float32)\n"
        "        for _ in range(300): p.decide(p.scores(x))\n"
        "        n, t = 0, time.perf_counter()\n"
        "        while time.perf_counter() - t < 2.0:\n"
        "            p.decide(p.scores(x)); n += 1\n"
        "        out[f'{name}, batch {rows}'] = n * rows / (time.perf_counter() - t)\n"
        "print(json.dumps(out))\n"
    ) % MAX_BATCH
    out = subprocess.run(
        [*_pin(SERVER_CPU), sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def cold_load(store: str, version: int) -> dict[str, float]:
    """Seconds from a fresh interpreter's start to a loaded, warmed-up predictor (`total_s`),
    and of that the load itself once the libraries are imported (`load_s`)."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import json, numpy as np, onnxruntime, torch\n"
        "from modelops_runtime import artifacts\n"
        "from modelops_runtime.predictor import load_predictor\n"
        "u = time.perf_counter()\n"
        f"p = load_predictor(artifacts.version_uri({store!r}, 'm', {version}))\n"
        "p.scores(np.zeros((1, 64), np.float32))\n"
        "v = time.perf_counter()\n"
        "print(json.dumps({'total_s': v - t, 'load_s': v - u}))\n"
    )
    out = subprocess.run(
        [*_pin(SERVER_CPU), sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _median_of(points: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(p[key] for p in points) for key in points[0]}


def serve_command(store: str, version: int, port: int) -> list[str]:
    return [
        sys.executable, "-m", "modelops_runtime", "serve", "--store", store, "--model", "m",
        "--version", str(version), "--port", str(port), "--max-batch-size", str(MAX_BATCH),
        "--max-wait-ms", "2",
    ]  # fmt: skip


async def closed_loop(port: int, body: bytes, seconds: float, connections: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    url = f"http://127.0.0.1:{port}{INFER_PATH}"
    headers = {"content-type": "application/json"}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"throughput": len(latencies) / elapsed, "errors": errors, **_percentiles(latencies)}


def closed_loop_run(port: int, seconds: float) -> dict[str, Any]:
    command = [*_pin(LOADGEN_CPU), sys.executable, __file__, "--role", "closed", "--port", str(port),
               "--seconds", str(seconds)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        root = Path(tmp)
        store, results["import"] = make_store(root)
        results["forward_rows_per_s"] = forward_ceiling(store)
        results["cold_load_s"] = {
            name: _median_of([cold_load(store, version) for _ in range(3)])
            for version, name in ((1, "safetensors"), (2, "onnx"))
        }
        body = request_body()
        body_file = root / "body.json"
        body_file.write_bytes(body)
        ports = {"safetensors": free_port(), "onnx": free_port()}
        ready: dict[str, float] = {}
        started = time.perf_counter()
        with server(serve_command(store, 1, ports["safetensors"]), ports["safetensors"], INFER_PATH, body,
                    root / "v1.log"):  # fmt: skip
            ready["safetensors"] = time.perf_counter() - started
            started = time.perf_counter()
            with server(serve_command(store, 2, ports["onnx"]), ports["onnx"], INFER_PATH, body,
                        root / "v2.log"):  # fmt: skip
                ready["onnx"] = time.perf_counter() - started
                results["start_to_ready_s"] = ready
                rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
                for i in range(args.rounds):
                    # Each version goes first every other round: load on a shared machine
                    # drifts, and the order would otherwise favour one of them.
                    for name, port in list(ports.items())[:: 1 if i % 2 == 0 else -1]:
                        rounds[name].append(closed_loop_run(port, args.seconds))
                results["closed_loop"] = {
                    name: {**sorted(points, key=lambda p: p["throughput"])[len(points) // 2],
                           "rounds": [round(p["throughput"]) for p in points]}
                    for name, points in rounds.items()
                }  # fmt: skip
                results["open_loop"] = {
                    str(rate): {
                        name: open_loop_run(port, rate, args.seconds, body_file)
                        for name, port in ports.items()
                    }
                    for rate in (float(r) for r in args.rates.split(","))
                }
    return results


def print_tables(results: dict[str, Any]) -> None:
    print(f"\nimport: {results['import']}")
    print("\nforward alone, rows/s (one thread):")
    for name, value in results["forward_rows_per_s"].items():
        print(f"  {name:24s} {value:12,.0f}")
    print(f"\ncold load, fresh process to loaded predictor (s): {results['cold_load_s']}")
    print(f"server start to ready (s): {results['start_to_ready_s']}")
    print("\nclosed loop, 64 connections (median round):")
    print("| version | req/s | p50 ms | p99 ms | rounds |")
    for name, point in results["closed_loop"].items():
        print(f"| {name} | {point['throughput']:.0f} | {point['p50_ms']:.1f} | {point['p99_ms']:.1f} "
              f"| {point['rounds']} |")  # fmt: skip
    print("\nopen loop (answers/s, p50 ms, p99 ms):")
    for rate, by in results["open_loop"].items():
        cells = ", ".join(f"{name}: {json.dumps(point)}" for name, point in by.items())
        print(f"  {rate}/s  {cells}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", default="main", choices=["main", "closed"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--seconds", type=float, default=6.0, help="Duration of each measurement.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved closed-loop rounds.")
    parser.add_argument("--rates", default="500,1500", help="Open-loop rates, requests/s.")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()
    if args.role == "closed":
        print(json.dumps(asyncio.run(closed_loop(args.port, request_body(), args.seconds, 64))))
        return 0
    results = measure(args)
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
