"""Helpers for the serving tests: small stored models, and a real server process.

`ServerProcess` starts `python -m modelops_runtime serve ...` on a free port,
waits until /v2/health/ready answers 200, and stops it (SIGTERM, then SIGKILL).
Its log goes to a file that is printed when readiness never comes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from modelops.api.artifact import EnsembleCard, EnsembleMemberCard, ModelCard, TensorSpec
from modelops.api.training import Architecture, EnsembleMethod, ModelSpec, Task
from modelops_runtime import artifacts
from modelops_runtime.models import build_model

N_FEATURES = 64
N_CLASSES = 10
CLASSES = [f"c{i}" for i in range(N_CLASSES)]


def classifier_card(name: str, version: int, hidden: list[int], n_features: int = N_FEATURES) -> ModelCard:
    return ModelCard(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        task=Task.CLASSIFICATION,
        spec=ModelSpec(architecture=Architecture.MLP, hidden_layers=hidden),
        features=[f"f{i}" for i in range(n_features)],
        n_features=n_features,
        n_outputs=N_CLASSES,
        classes=CLASSES,
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, n_features])],
        outputs=[
            TensorSpec(name="predictions", datatype="INT64", shape=[-1]),
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, N_CLASSES]),
        ],
    )


def save_classifier(
    store: str, name: str, version: int, hidden: list[int] | None = None, seed: int | None = None
) -> ModelCard:
    """A randomly initialised MLP classifier saved as a finished version."""
    hidden = hidden or [128, 64]
    card = classifier_card(name, version, hidden)
    torch.manual_seed(version if seed is None else seed)
    assert card.spec is not None
    network = build_model(card.spec, N_FEATURES, N_CLASSES)
    tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
    tensors["input.mean"] = torch.full((N_FEATURES,), 0.5)
    tensors["input.std"] = torch.full((N_FEATURES,), 0.25)
    artifacts.save_version(artifacts.version_uri(store, name, version), card, tensors, {"accuracy": 0.5}, None)
    return card


def write_feature_shards(folder: Path, fmt: str, shards: int, rows: int) -> dict[str, np.ndarray]:
    """`shards` files `part-NNNN` of random features f0.. and an `id` column; stem -> features."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {}
    for i in range(shards):
        x = rng.random((rows, N_FEATURES), dtype=np.float32)
        frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(N_FEATURES)])
        frame.insert(0, "id", np.arange(rows) + i * rows)
        name = f"part-{i:04d}"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet",
                           row_group_size=500)
        else:
            frame.to_csv(folder / f"{name}.csv", index=False)
        data[name] = x
    return data


def save_stored_ensemble(store: str, name: str, version: int, members: list[int], method: str) -> None:
    """An ensemble version whose members are copies of stored versions under members/<i>/."""
    folder = artifacts.version_uri(store, name, version)
    member_cards = []
    for i, member in enumerate(members):
        source = artifacts.version_uri(store, name, member)
        target = artifacts.join(folder, "members", i)
        tensors = artifacts.load_weights(artifacts.join(source, artifacts.WEIGHTS))
        artifacts.save_version(target, artifacts.load_card(source), tensors, {}, None)
        member_cards.append(EnsembleMemberCard(path=f"members/{i}", weight=1.0, source=f"v{member}"))
    base = artifacts.load_card(artifacts.version_uri(store, name, members[0]))
    card = base.model_copy(
        update={
            "version": version,
            "spec": None,
            "ensemble": EnsembleCard(method=EnsembleMethod(method), members=member_cards),
        }
    )
    artifacts.save_version(folder, card, None, {}, None)


def infer_body(rows: np.ndarray, request_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A real `serve` process; use as a context manager."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 90.0
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "modelops_runtime", "serve", "--host", "127.0.0.1",
                     "--port", str(self.port), *args]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {self.ready_timeout_s}s:\n{self.log()}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class GrpcServerProcess(ServerProcess):
    """A real `serve` process that also listens for gRPC; `grpc` is its target."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        grpc_port = free_port()
        super().__init__([*args, "--grpc-port", str(grpc_port)], log_path, env)
        self.grpc = f"127.0.0.1:{grpc_port}"


def serve_m(store: str, log_path: Path, env: dict[str, str] | None = None) -> GrpcServerProcess:
    """Model `m` of make_store at version 1 on both ports, batching 32 rows / 2 ms."""
    args = ["--store", store, "--model", "m", "--version", "1", "--max-batch-size", "32", "--max-wait-ms", "2"]
    return GrpcServerProcess(args, log_path, env)


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one metric from a Prometheus exposition: label string -> value."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name):]] = float(value)
    return found


def make_store(root: Path) -> str:
    """A store with model `m`: versions 1-3 (different random MLPs) and 4 (stored mean ensemble of 1, 2)."""
    store = f"file://{root}"
    for version in (1, 2, 3):
        save_classifier(store, "m", version)
    save_stored_ensemble(store, "m", 4, [1, 2], "mean")
    return store


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


async def post_many(
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    headers: list[dict[str, str]] | None = None,
) -> list[Reply]:
    """POST every body with `concurrency` requests in flight over keep-alive connections."""
    replies: list[Reply | None] = [None] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                extra = headers[i] if headers else None
                async with session.post(url, data=orjson.dumps(bodies[i]), headers=extra) as response:
                    payload = await response.read()
                    replies[i] = Reply(
                        response.status,
                        {k.lower(): v for k, v in response.headers.items()},
                        orjson.loads(payload) if payload else {},
                    )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in replies if r is not None]


def post_all(url: str, bodies: list[dict[str, Any]], concurrency: int, **kwargs: Any) -> list[Reply]:
    return asyncio.run(post_many(url, bodies, concurrency, **kwargs))


class CaptureServer:
    """An HTTP server on loopback that records every request it gets (method, path,
    Authorization) and answers each with `answer`: where a test proves nothing was sent."""

    def __init__(self, answer: bytes = b"{}") -> None:
        import http.server
        import threading

        seen: list[tuple[str, str, str]] = []
        self.requests = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                seen.append((self.command, self.path, self.headers.get("Authorization") or ""))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_PUT = do_POST = _record

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
