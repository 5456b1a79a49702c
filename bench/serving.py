#!/usr/bin/env python3
"""Benchmark the model server against Ray Serve and a naive FastAPI endpoint.

    python bench/serving.py [--seconds 8] [--rounds 3] [--rates 100,500,1500] [--json out.json]

One run, one model (the digits-sized MLP 64->128->64->10, random weights, saved
as a real version), one machine, the same load generators for all three servers:
  - modelops: `python -m modelops_runtime serve` (batching 64 rows / 2 ms);
  - Ray Serve: an HTTP-proxied deployment whose method is `@serve.batch`
    (max_batch_size 64, batch_wait_timeout_s 0.002, max_ongoing_requests 256,
    access log off: its best settings for this load);
  - naive: FastAPI on uvicorn (uvloop + httptools), a pydantic request model and
    one forward pass per request, as most hand-written endpoints are.
Each answers the same Open Inference Protocol body (one row) with predictions
and probabilities. Load patterns:
  - closed loop: wrk, 64 keep-alive connections, one thread;
  - open loop: requests sent at fixed rates whatever the answers (the generator
    below, on raw asyncio + httptools); latency counts from the scheduled send
    time, so a server that falls behind is charged for the queue (no
    coordinated omission).
Ceilings: the model's batched forward alone (rows/s at batch 64, eager and
traced), and empty handlers (GET /v2/health/live on our HTTP stack, and an
aiohttp hello-world for the stack choice) under the same wrk load.
Servers run on CPU 1 and load generators on CPU 0 (taskset) when the machine
has two or more CPUs, so they do not steal each other's core. All servers are up
at once and the closed-loop measurements are interleaved in rounds (medians are
reported), so a burst of outside load on a shared machine hits every peer alike.
Targets: throughput >= 3x Ray Serve's with p99 no worse; >= 1.5x the naive one's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MAX_BATCH = 64
MAX_WAIT_S = 0.002
INFER_PATH = "/v2/models/m/infer"
SERVER_CPU = "1"
LOADGEN_CPU = "0"


# -- the model and the request body ----------------------------------------------


def make_model(root: Path) -> str:
    from tests.runtime.serve_helpers import save_classifier

    store = f"file://{root}"
    save_classifier(store, "m", 1, hidden=[128, 64])
    return store


def request_body() -> bytes:
    import numpy as np

    row = np.random.default_rng(0).random(64).round(4).tolist()
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}).encode()


# -- the peers, each run as its own process (--role) --------------------------------


class Tensor(BaseModel):
    """The naive endpoint's request model (module level: FastAPI resolves it by name)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    inputs: list[Tensor]


def run_naive(store: str, port: int) -> None:
    import numpy as np
    import torch
    import uvicorn
    from fastapi import FastAPI

    from modelops_runtime import artifacts
    from modelops_runtime.predictor import load_predictor

    torch.set_num_threads(1)
    predictor = load_predictor(artifacts.version_uri(store, "m", 1))

    app = FastAPI()

    @app.post(INFER_PATH)
    def infer(request: InferRequest) -> dict[str, Any]:
        tensor = request.inputs[0]
        rows = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        scores = predictor.scores(rows)
        return {
            "model_name": "m",
            "model_version": "1",
            "outputs": [
                {"name": "predictions", "datatype": "INT64", "shape": [len(rows)],
                 "data": predictor.decide(scores).tolist()},
                {"name": "probabilities", "datatype": "FP32", "shape": list(scores.shape),
                 "data": scores.ravel().tolist()},
            ],
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_ray(store: str, port: int) -> None:
    import numpy as np
    import ray
    import torch
    from ray import serve
    from starlette.requests import Request

    from modelops_runtime import artifacts
    from modelops_runtime.predictor import load_predictor

    # On one busy core the raylet can take longer than Ray's default wait to register.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"enable_access_log": False, "log_level": "WARNING"})

    @serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
    class Model:
        def __init__(self) -> None:
            torch.set_num_threads(1)
            self.predictor = load_predictor(artifacts.version_uri(store, "m", 1))

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=MAX_WAIT_S)
        async def forward(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
            scores = self.predictor.scores(np.concatenate(batches))
            predictions = self.predictor.decide(scores)
            out, start = [], 0
            for rows in batches:
                out.append((predictions[start : start + len(rows)], scores[start : start + len(rows)]))
                start += len(rows)
            return out

        async def __call__(self, request: Request) -> dict[str, Any]:
            tensor = (await request.json())["inputs"][0]
            rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            predictions, scores = await self.forward(rows)
            return {
                "model_name": "m",
                "model_version": "1",
                "outputs": [
                    {"name": "predictions", "datatype": "INT64", "shape": [len(rows)],
                     "data": predictions.tolist()},
                    {"name": "probabilities", "datatype": "FP32", "shape": list(scores.shape),
                     "data": scores.ravel().tolist()},
                ],
            }

    serve.run(Model.bind(), route_prefix=INFER_PATH)

    def stop(*_: Any) -> None:
        serve.shutdown()
        ray.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


def run_aiohttp_empty(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b'{"live":true}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/", hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the open-loop load generator ------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(-1)


async def open_loop(port: int, body: bytes, rate: float, seconds: float, max_connections: int = 512) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = (
        f"POST {INFER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[_Client] = []
    opened = 0
    free = asyncio.Condition()
    latencies: list[float] = []
    errors = 0
    finished = time.perf_counter()  # uvloop's loop.time() has millisecond resolution

    async def one(scheduled: float) -> None:
        nonlocal opened, errors, finished
        async with free:
            while not idle and opened >= max_connections:
                await free.wait()
            if idle:
                client = idle.pop()
            else:
                opened += 1
                client = None
        if client is None:
            _, client = await loop.create_connection(_Client, "127.0.0.1", port)
        client.done = loop.create_future()
        assert client.transport is not None
        client.transport.write(request)
        status = await client.done
        finished = time.perf_counter()
        if status == 200:
            latencies.append(finished - scheduled)
        else:
            errors += 1
        async with free:
            if status != -1:
                idle.append(client)
            else:
                opened -= 1
            free.notify()

    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []
    sent = 0
    while sent < total:  # send everything due, then sleep a little: sleeps are coarse
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            tasks.append(asyncio.ensure_future(one(start + sent / rate)))
            sent += 1
        await asyncio.sleep(0.001)
    _, pending = await asyncio.wait(tasks, timeout=15)
    for task in pending:
        task.cancel()
    elapsed = max(finished - start, seconds)
    return {
        "rate": rate,
        "sent": total,
        "ok": len(latencies),
        "errors": errors + len(pending),
        "throughput": len(latencies) / elapsed,
        **_percentiles(latencies),
    }


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def run_open_loop(port: int, rate: float, seconds: float, body_path: str) -> None:
    import uvloop

    body = Path(body_path).read_bytes()
    result = uvloop.run(open_loop(port, body, rate, seconds))
    print(json.dumps(result))


# -- orchestration --------------------------------------------------------------------


def _pin(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(
    port: int, path: str, body: bytes | None, timeout_s: float, process: subprocess.Popen[bytes]
) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            if body is None:
                reply = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            else:
                reply = httpx.post(f"http://127.0.0.1:{port}{path}", content=body, timeout=5,
                                   headers={"content-type": "application/json"})
            if reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered on port {port}{path} within {timeout_s}s")


@contextmanager
def server(command: list[str], port: int, path: str, body: bytes | None, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen([*_pin(SERVER_CPU), *command], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_http(port, path, body, timeout_s=300, process=process)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # our own child's group (Ray's workers)
            process.wait()


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port: int, path: str, seconds: float, lua: Path | None, connections: int = 64) -> dict[str, Any]:
    # --timeout 30s: a slow answer is counted with its latency, not dropped as a timeout
    command = [*_pin(LOADGEN_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
               "--timeout", "30s"]
    if lua is not None:
        command += ["-s", str(lua)]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if len(latency) < 2:
        raise RuntimeError(f"wrk got no answers from port {port}{path}:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "throughput": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def open_loop_run(port: int, rate: float, seconds: float, body_file: Path) -> dict[str, Any]:
    command = [*_pin(LOADGEN_CPU), sys.executable, __file__, "--role", "openloop", "--port", str(port),
               "--rate", str(rate), "--seconds", str(seconds), "--body", str(body_file)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def forward_ceiling(store: str) -> dict[str, float]:
    """Rows/s of the bare batched forward pass, on the server's CPU."""
    code = (
        "import time, json, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from modelops_runtime import artifacts\n"
        "from modelops_runtime.predictor import load_predictor\n"
        "from modelops_runtime.serve.compiled import traced\n"
        f"p = load_predictor(artifacts.version_uri({store!r}, 'm', 1))\n"
        "x = np.random.rand(%d, 64).astype(np.float32)\n"
        "out = {}\n"
        "for name, q in (('eager', p), ('traced', traced(p))):\n"
        "    for _ in range(200): q.decide(q.scores(x))\n"
        "    n, t = 0, time.perf_counter()\n"
        "    while time.perf_counter() - t < 2.0:\n"
        "        q.decide(q.scores(x)); n += 1\n"
        "    out[name] = n * len(x) / (time.perf_counter() - t)\n"
        "print(json.dumps(out))\n"
    ) % MAX_BATCH
    out = subprocess.run([*_pin(SERVER_CPU), sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _median(points: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies come with it, consistently)."""
    ordered = sorted(points, key=lambda p: p["throughput"])
    return {**ordered[len(ordered) // 2], "rounds": [p["throughput"] for p in points]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """All servers run at once (idle ones cost little); measurements are interleaved in
    rounds, so a burst of outside load hits every server alike, and medians are kept."""
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    store = make_model(work / "store")
    body = request_body()
    body_file = work / "body.json"
    body_file.write_bytes(body)
    lua = work / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()\n'
    )
    rates = [float(r) for r in args.rates.split(",")]
    me = [sys.executable, __file__]
    ports = {name: free_port() for name in ("modelops", "ray_serve", "naive_fastapi", "aiohttp_empty")}
    commands = {
        "modelops": [sys.executable, "-m", "modelops_runtime", "serve", "--store", store, "--model", "m",
                     "--version", "1", "--host", "127.0.0.1", "--port", str(ports["modelops"]),
                     "--max-batch-size", str(MAX_BATCH), "--max-wait-ms", str(MAX_WAIT_S * 1000)],
        "ray_serve": [*me, "--role", "ray", "--store", store, "--port", str(ports["ray_serve"])],
        "naive_fastapi": [*me, "--role", "naive", "--store", store, "--port", str(ports["naive_fastapi"])],
    }
    results: dict[str, Any] = {"servers": {}, "ceilings": {}, "rounds": args.rounds, "seconds": args.seconds}
    results["ceilings"]["forward_rows_per_s"] = forward_ceiling(store)
    print("forward ceiling (rows/s, batch 64):", results["ceilings"]["forward_rows_per_s"], flush=True)
    with contextlib.ExitStack() as stack:
        for name, command in commands.items():
            stack.enter_context(server(command, ports[name], INFER_PATH, body, work / f"{name}.log"))
        stack.enter_context(server([*me, "--role", "aiohttp-empty", "--port", str(ports["aiohttp_empty"])],
                                   ports["aiohttp_empty"], "/", None, work / "aiohttp.log"))
        for name in commands:
            with contextlib.suppress(RuntimeError, KeyError):  # warm-up: slow first answers are fine
                wrk(ports[name], INFER_PATH, 3, lua)
        closed: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
        empty: dict[str, list[dict[str, Any]]] = {"modelops_http": [], "aiohttp": []}
        for round_ in range(args.rounds):
            for name in commands:
                closed[name].append(wrk(ports[name], INFER_PATH, args.seconds, lua))
                print(f"round {round_ + 1} {name} closed loop: {closed[name][-1]}", flush=True)
            empty["modelops_http"].append(wrk(ports["modelops"], "/v2/health/live", args.seconds, None))
            empty["aiohttp"].append(wrk(ports["aiohttp_empty"], "/", args.seconds, None))
            print(f"round {round_ + 1} empty handlers: {empty['modelops_http'][-1]['throughput']:.0f} (ours), "
                  f"{empty['aiohttp'][-1]['throughput']:.0f} (aiohttp)", flush=True)
        opened: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
        for rate in rates:
            for name in commands:
                opened[name].append(open_loop_run(ports[name], rate, args.seconds, body_file))
                print(f"{name} open loop: {opened[name][-1]}", flush=True)
    for name in commands:
        results["servers"][name] = {"closed": _median(closed[name]), "open": opened[name],
                                    "closed_rounds": closed[name]}
    results["ceilings"]["empty_handler_modelops_http"] = _median(empty["modelops_http"])
    results["ceilings"]["empty_handler_aiohttp"] = _median(empty["aiohttp"])
    shutil.rmtree(work, ignore_errors=True)
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def report(results: dict[str, Any]) -> dict[str, Any]:
    s = results["servers"]
    ours, ray, naive = s["modelops"]["closed"], s["ray_serve"]["closed"], s["naive_fastapi"]["closed"]
    c = results["ceilings"]
    per_round = [
        _ratio(a["throughput"], b["throughput"])
        for a, b in zip(s["modelops"]["closed_rounds"], s["ray_serve"]["closed_rounds"], strict=True)
    ]
    ratios: dict[str, Any] = {
        "closed_throughput_vs_ray_per_round": per_round,
        "closed_throughput_vs_ray": _ratio(ours["throughput"], ray["throughput"]),
        "closed_p99_vs_ray": _ratio(ours["p99_ms"], ray["p99_ms"]),
        "closed_p50_vs_ray": _ratio(ours["p50_ms"], ray["p50_ms"]),
        "closed_throughput_vs_naive": _ratio(ours["throughput"], naive["throughput"]),
        "closed_p99_vs_naive": _ratio(ours["p99_ms"], naive["p99_ms"]),
        "infer_vs_empty_handler": _ratio(ours["throughput"], c["empty_handler_modelops_http"]["throughput"]),
        "infer_vs_forward_ceiling": _ratio(ours["throughput"], c["forward_rows_per_s"]["traced"]),
        "our_empty_handler_vs_aiohttp": _ratio(c["empty_handler_modelops_http"]["throughput"],
                                               c["empty_handler_aiohttp"]["throughput"]),
        "open": [],
    }
    for i, point in enumerate(s["modelops"]["open"]):
        r, n = s["ray_serve"]["open"][i], s["naive_fastapi"]["open"][i]
        ratios["open"].append({
            "rate": point["rate"],
            "throughput_vs_ray": _ratio(point["throughput"], r["throughput"]),
            "p99_vs_ray": _ratio(point["p99_ms"], r["p99_ms"]),
            "throughput_vs_naive": _ratio(point["throughput"], n["throughput"]),
            "p99_vs_naive": _ratio(point["p99_ms"], n["p99_ms"]),
        })
    ratios["targets_met"] = bool(
        (ratios["closed_throughput_vs_ray"] or 0) >= 3.0
        and (ratios["closed_p99_vs_ray"] or 99) <= 1.0
        and (ratios["closed_throughput_vs_naive"] or 0) >= 1.5
    )
    return ratios


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(results: dict[str, Any], ratios: dict[str, Any]) -> None:
    print("\nclosed loop, 64 keep-alive connections (wrk):")
    print(f"{'server':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
    for name, entry in results["servers"].items():
        closed = entry["closed"]
        print(f"{name:<16}{closed['throughput']:>10.0f}{closed['p50_ms']:>10.2f}{closed['p99_ms']:>10.2f}"
              f"{closed['non_2xx']:>9}")
    print("\nopen loop (fixed rates; latency from the scheduled send):")
    print(f"{'server':<16}{'rate':>8}{'ok/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, entry in results["servers"].items():
        for point in entry["open"]:
            print(f"{name:<16}{point['rate']:>8.0f}{point['throughput']:>10.0f}{_fmt(point['p50_ms']):>10}"
                  f"{_fmt(point['p99_ms']):>10}{point['errors']:>8}")
    c = results["ceilings"]
    print("\nceilings:")
    print(f"  batched forward alone (batch 64): eager {c['forward_rows_per_s']['eager']:.0f} rows/s, "
          f"traced {c['forward_rows_per_s']['traced']:.0f} rows/s")
    print(f"  empty handler, our HTTP stack: {c['empty_handler_modelops_http']['throughput']:.0f} req/s; "
          f"aiohttp: {c['empty_handler_aiohttp']['throughput']:.0f} req/s")
    print("\nratios (modelops / peer):")
    for key, value in ratios.items():
        if key.endswith("per_round"):
            print(f"  {key}: {', '.join(_fmt(v) for v in value)}")
        elif key == "open":
            for point in value:
                print(f"  open @ {point['rate']:.0f}/s: throughput vs ray {_fmt(point['throughput_vs_ray'])}, "
                      f"p99 vs ray {_fmt(point['p99_vs_ray'], 3)}, throughput vs naive "
                      f"{_fmt(point['throughput_vs_naive'])}, p99 vs naive {_fmt(point['p99_vs_naive'], 3)}")
        else:
            print(f"  {key}: {value if isinstance(value, bool) else _fmt(value, 3)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="main", choices=["main", "ray", "naive", "aiohttp-empty", "openloop"])
    parser.add_argument("--store")
    parser.add_argument("--port", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--body")
    parser.add_argument("--seconds", type=float, default=8.0, help="Duration of each measurement.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved closed-loop rounds.")
    parser.add_argument("--rates", default="100,500,1500", help="Open-loop rates, requests/s.")
    parser.add_argument("--json", help="Also write the results here.")
    args = parser.parse_args()
    if args.role == "ray":
        run_ray(args.store, args.port)
    elif args.role == "naive":
        run_naive(args.store, args.port)
    elif args.role == "aiohttp-empty":
        run_aiohttp_empty(args.port)
    elif args.role == "openloop":
        run_open_loop(args.port, args.rate, args.seconds, args.body)
    else:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is needed for the closed loop: apt-get install wrk")
        results = measure(args)
        ratios = report(results)
        print_tables(results, ratios)
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
