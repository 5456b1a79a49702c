#!/usr/bin/env python3
"""The model server's two transports side by side: OIP over gRPC and over REST (JSON),
and the same against KServe's Python ModelServer when the kserve package is installed
and MLServer when its virtualenv (MLSERVER_VENV) exists.

    python bench/serving_grpc.py [--seconds 8] [--streams 64] [--rounds 3] [--json out.json]

One `python -m modelops_runtime serve` process with both ports (batching 64 rows /
2 ms, the digits-sized MLP of bench/serving.py), driven in a separate process by
the same kind of closed-loop load on each transport: `--streams` concurrent
one-row infer calls, each sent as soon as the previous one on its stream answered.
gRPC load is grpc.aio sending one prepared ModelInferRequest (raw tensor contents,
as tritonclient sends them); the grpc-stream row sends the same message on Triton's
bidirectional ModelStreamInfer, one call per stream, each request answered before
the next is written; REST load is aiohttp sending the protocol's JSON body
(what bench/serving.py sends). Both clients are Python on the same machine, so on a
small machine they take CPU from the server alike. Rounds are interleaved and the median round is reported.
The ceiling is the bare batched forward pass of the same network (rows/s at batch 64).
KServe's ModelServer (one worker, REST and gRPC) serves the same predictor with one
forward pass per request: its Python server has no adaptive batching of its own
(KServe batches in a separate agent in front of it). MLServer runs the same predictor
as a custom MLModel (bench/mlserver_model.py) with its adaptive batching on (64 rows /
2 ms). Its pins conflict with this project's, so it lives in its own virtualenv, made
with --system-site-packages so that torch and the predictor come from this interpreter:

    python -m venv --system-site-packages ~/.cache/modelops/bench-venvs/mlserver
    ~/.cache/modelops/bench-venvs/mlserver/bin/pip install mlserver==1.7.1 uvloop==0.21.0

(uvloop 0.22 and later refuse the asyncio.get_event_loop() call MLServer 1.7's
inference workers make at start.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import MAX_BATCH, MAX_WAIT_S, forward_ceiling, make_model, request_body  # noqa: E402

MLSERVER_VENV = Path.home() / ".cache" / "modelops" / "bench-venvs" / "mlserver"


def _infer_message() -> bytes:
    import numpy as np
    from tritonclient.grpc import service_pb2

    # The message is built once (with tritonclient's protocol types) and sent as bytes,
    # as the REST load sends one prepared body: both measure the server, not the client.
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.random.default_rng(0).random((1, 64), dtype=np.float32).tobytes())
    return request.SerializeToString()


Send = Callable[[], Awaitable[object]]


async def _closed_loop(streams: int, seconds: float, new_stream: Callable[[], Send]) -> list[float]:
    """`streams` loops, each sending its next request as soon as its last one answered."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop() -> None:
        send = new_stream()
        while time.perf_counter() < stop:
            started = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(loop() for _ in range(streams)))
    return latencies


async def _grpc_load(target: str, streams: int, seconds: float) -> list[float]:
    import grpc

    message = _infer_message()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        return await _closed_loop(streams, seconds, lambda: lambda: call(message))


async def _grpc_stream_load(target: str, streams: int, seconds: float) -> list[float]:
    """Each stream is one ModelStreamInfer call: send a request, read its answer, repeat."""
    import grpc

    message = _infer_message()
    async with grpc.aio.insecure_channel(target) as channel:
        method = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        calls = []

        def new_stream() -> Send:
            call = method()
            calls.append(call)

            async def send() -> None:
                await call.write(message)
                await call.read()

            return send

        latencies = await _closed_loop(streams, seconds, new_stream)
        for call in calls:
            await call.done_writing()
        return latencies


JSON = {"content-type": "application/json"}


async def _rest_load(url: str, streams: int, seconds: float) -> list[float]:
    import aiohttp

    body = request_body()
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> None:
            async with session.post(f"{url}/v2/models/m/infer", data=body, headers=JSON) as response:
                await response.read()
                assert response.status == 200

        return await _closed_loop(streams, seconds, lambda: send)


LOADS: dict[str, Callable[[str, int, float], Awaitable[list[float]]]] = {
    "grpc": _grpc_load, "rest": _rest_load, "grpc-stream": _grpc_stream_load,
}


def run_kserve(store: str, http_port: int, grpc_port: int) -> None:
    """The KServe peer (`--role kserve`): the same predictor behind kserve.ModelServer."""
    import numpy as np
    from kserve import InferOutput, InferResponse, Model, ModelServer

    from modelops_runtime import artifacts
    from modelops_runtime.predictor import load_predictor

    class Peer(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("m")
            self.predictor = load_predictor(artifacts.version_uri(store, "m", 1))
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            scores = self.predictor.scores(payload.inputs[0].as_numpy().astype(np.float32))
            labels = self.predictor.decide(scores).astype(np.int64)
            outputs = [InferOutput("predictions", list(labels.shape), "INT64"),
                       InferOutput("probabilities", list(scores.shape), "FP32")]
            outputs[0].set_data_from_numpy(labels, binary_data=False)
            outputs[1].set_data_from_numpy(scores.astype(np.float32), binary_data=False)
            return InferResponse(model_name="m", infer_outputs=outputs, response_id=payload.id or uuid.uuid4().hex)

    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=True).start([Peer()])


def _summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "throughput": len(ordered) / seconds,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


@contextlib.contextmanager
def _peer(
    name: str, command: list[str], http_port: int, grpc_port: int, log: Path, **popen: Any
) -> Iterator[tuple[str, str, str]]:
    """A peer server process, yielded as (name, gRPC target, REST URL) once it is ready."""
    import httpx

    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/models/m/ready", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} peer not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield name, f"127.0.0.1:{grpc_port}", url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kserve_peer(store: str, log: Path) -> contextlib.AbstractContextManager[tuple[str, str, str]]:
    from tests.runtime.serve_helpers import free_port

    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, __file__, "--role", "kserve", "--store", store,
               "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    return _peer("kserve", command, http_port, grpc_port, log)


def _mlserver_peer(store: str, folder: Path) -> contextlib.AbstractContextManager[tuple[str, str, str]]:
    """`mlserver start` on a folder holding the settings and the model's settings."""
    from tests.runtime.serve_helpers import free_port

    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({
        "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "host": "127.0.0.1", "debug": False,
    }))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "m", "implementation": "bench.mlserver_model.Peer",
        "max_batch_size": MAX_BATCH, "max_batch_time": MAX_WAIT_S,
        "parameters": {"extra": {"store": store}},
    }))
    command = [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(folder)]
    return _peer("mlserver", command, http_port, grpc_port, folder / "mlserver.log",
                 env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--role", default="main", choices=["main", "kserve"])
    parser.add_argument("--store")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--grpc-port", type=int)
    args = parser.parse_args()
    if args.role == "kserve":
        run_kserve(args.store, args.http_port, args.grpc_port)
        return 0

    from tests.runtime.serve_helpers import ServerProcess, free_port

    with tempfile.TemporaryDirectory() as tmp:
        store = make_model(Path(tmp))
        grpc_port = free_port()
        server_args = ["--store", store, "--model", "m", "--version", "1", "--grpc-port", str(grpc_port),
                       "--max-batch-size", str(MAX_BATCH), "--max-wait-ms", str(MAX_WAIT_S * 1000),
                       "--max-queue", "4096"]
        # (name, gRPC target, REST URL) of every server up at once; rounds interleave them.
        servers: list[tuple[str, str, str]] = []
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(ServerProcess(server_args, Path(tmp) / "server.log"))
            servers.append(("modelops", f"127.0.0.1:{grpc_port}", server.url))
            if importlib.util.find_spec("kserve") is not None:
                servers.append(stack.enter_context(_kserve_peer(store, Path(tmp) / "kserve.log")))
            if (MLSERVER_VENV / "bin" / "mlserver").exists():
                servers.append(stack.enter_context(_mlserver_peer(store, Path(tmp) / "mlserver")))
            # (row, load, address): unary gRPC and REST for every server, and the
            # bidirectional stream for modelops (KServe's service has no streaming call;
            # MLServer streams without its adaptive batching, so it is not its fast path).
            rows = [(f"{name} {t}", LOADS[t], target if t != "rest" else url)
                    for name, target, url in servers for t in ("grpc", "rest")]
            rows.insert(1, ("modelops grpc-stream", LOADS["grpc-stream"], servers[0][1]))
            rounds: dict[str, list[dict[str, float]]] = {row: [] for row, _, _ in rows}
            for _, load, address in rows:  # warm-up: connections, traced graph
                asyncio.run(load(address, 8, 1.0))
            for _ in range(args.rounds):
                for row, load, address in rows:
                    rounds[row].append(_summary(asyncio.run(load(address, args.streams, args.seconds)), args.seconds))
        ceiling = forward_ceiling(store)
    median = {k: sorted(v, key=lambda r: r["throughput"])[len(v) // 2] for k, v in rounds.items()}
    best = max(ceiling.values())
    results: dict[str, Any] = {
        "streams": args.streams, "seconds": args.seconds, "rounds": rounds, "median": median,
        "forward_ceiling_rows_per_s": ceiling,
        "grpc_over_rest": median["modelops grpc"]["throughput"] / median["modelops rest"]["throughput"],
        "grpc_stream_over_rest":
            median["modelops grpc-stream"]["throughput"] / median["modelops rest"]["throughput"],
        "fraction_of_ceiling": {k: v["throughput"] / best for k, v in median.items()},
        "spread": {k: statistics.pstdev([r["throughput"] for r in v]) for k, v in rounds.items()},
    }
    print(f"{'server, transport':<21} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of ceiling':>11}")
    for name, row in median.items():
        print(f"{name:<21} {row['throughput']:>9.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{results['fraction_of_ceiling'][name]:>10.1%}")
    print(f"forward ceiling (rows/s at batch {MAX_BATCH}): {ceiling}")
    print(f"gRPC / REST throughput: {results['grpc_over_rest']:.2f} unary, "
          f"{results['grpc_stream_over_rest']:.2f} streamed")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
