"""The ModelOps quickstart: the whole lifecycle of a digits classifier on one machine.

1. writes scikit-learn's bundled digits as parquet shards (six now, two held back);
2. starts `modelops run` on this folder's manifests: it trains the MLP on Ray, serves
   it behind one local endpoint, and watches the data for the incremental update;
3. measures the served accuracy on the held-out digits over HTTP;
4. sends a burst of load and shows the replicas scaling up, then back down;
5. appends the held-back shards and shows the update run promoted and served;
6. with --corrupt, appends shards whose labels are shuffled and shows that update
   rejected by the promotion gate while the good version keeps serving;
7. stops everything with Ctrl-C (SIGINT), as a user would.

`python examples/quickstart/quickstart.py [--root DIR] [--port P] [--summary FILE]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
MODEL = "digits"


def log(message: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_data(root: Path, initial: int, total: int) -> tuple[Path, list[Path]]:
    """Shards under root/quickstart/data; returns the train folder and the held-back shards."""
    base = root / "quickstart"
    staging = base / "staging"
    if not staging.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelops_runtime",
                "datasets",
                "digits",
                str(staging),
                "--shards",
                str(total),
                "--seed",
                "0",
            ],
            check=True,
        )
    train = base / "data" / "train"
    train.mkdir(parents=True, exist_ok=True)
    holdout = base / "data" / "holdout"
    if not holdout.exists():
        shutil.copytree(staging / "holdout", holdout)
    shards = sorted((staging / "train").glob("*.parquet"))
    for shard in shards[:initial]:
        if not (train / shard.name).exists():
            shutil.copy(shard, train / shard.name)
    return train, shards[initial:]


def write_corrupted(root: Path, count: int) -> list[Path]:
    """Copies of training shards with their labels shuffled: data a gate must refuse."""
    rng = np.random.default_rng(0)
    staging = sorted((root / "quickstart" / "staging" / "train").glob("*.parquet"))
    train = root / "quickstart" / "data" / "train"
    written = []
    for index in range(count):
        frame = pq.read_table(staging[index % len(staging)]).to_pandas()
        frame["target"] = rng.permutation(frame["target"].to_numpy())
        temp = train / f".corrupt-{index:03d}.parquet.tmp"
        frame.to_parquet(temp, index=False)
        written.append(temp)
    final = []
    for temp in written:
        target = temp.with_name(temp.name.lstrip(".").removesuffix(".tmp"))
        temp.rename(target)
        final.append(target)
    return final


def holdout_rows(root: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(root / "quickstart" / "data" / "holdout")
    frame = table.to_pandas()
    features = [c for c in frame.columns if c != "target"]
    return frame[features].to_numpy(np.float32), frame["target"].to_numpy()


def state_of(state: Path, kind: str, name: str) -> dict[str, Any]:
    try:
        record = json.loads((state / "resources" / f"{kind}.{name}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    status: dict[str, Any] = record.get("status") or {}
    return status


def wait_for(what: str, check: Any, timeout: float, run: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if run.poll() is not None:
            raise RuntimeError(f"modelops run exited ({run.returncode}) while waiting for {what}")
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def endpoint_ready(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/v2/models/{MODEL}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def infer_body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }


async def served_accuracy(url: str, x: np.ndarray, y: np.ndarray) -> tuple[float, str]:
    correct, version = 0, ""
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(x), 32):
            rows = x[start : start + 32]
            async with session.post(f"{url}/v2/models/{MODEL}/infer", json=infer_body(rows)) as r:
                r.raise_for_status()
                answer = await r.json()
            version = str(answer.get("model_version", ""))
            predicted = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
            labels = y[start : start + 32]
            correct += sum(str(p) == str(t) for p, t in zip(predicted, labels, strict=True))
    return correct / len(x), version


async def burst(
    url: str, x: np.ndarray, seconds: float, clients: int, state: Path
) -> dict[str, int]:
    """Closed-loop load: `clients` keep-alive clients, one row per request; also the
    most replicas the autoscaler asked for while it ran."""
    counts = {"ok": 0, "failed": 0, "peak_replicas": 0}
    deadline = time.monotonic() + seconds

    async def watch() -> None:
        while time.monotonic() < deadline + 5:
            desired = state_of(state, "ModelDeployment", "digits").get("desiredReplicas", 0)
            counts["peak_replicas"] = max(counts["peak_replicas"], desired)
            await asyncio.sleep(0.5)

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        i = index
        while time.monotonic() < deadline:
            body = infer_body(x[i % len(x)][None, :])
            i += clients
            try:
                async with session.post(f"{url}/v2/models/{MODEL}/infer", json=body) as r:
                    await r.read()
                    counts["ok" if r.status == 200 else "failed"] += 1
            except aiohttp.ClientError:
                counts["failed"] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(watch(), *(client(i, session) for i in range(clients)))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=".modelops", help="local stand-in for /var/lib/modelops")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--burst-seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=900.0, help="for each stage")
    parser.add_argument("--summary", help="write the figures as JSON here")
    parser.add_argument("--corrupt", action="store_true", help="also show a rejected update")
    parser.add_argument("--keep-serving", action="store_true", help="don't stop at the end")
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    state = root / "state"
    _, held_back = prepare_data(root, initial=6, total=8)
    x, y = holdout_rows(root)
    command = [
        sys.executable,
        "-m",
        "modelops",
        "run",
        str(HERE),
        "--root",
        str(root),
        "--state",
        str(state),
        "--port",
        str(args.port),
        "--no-live",
    ]
    log("starting: " + " ".join(command[2:]))
    run = subprocess.Popen(command, start_new_session=True)
    summary: dict[str, Any] = {"url": f"http://127.0.0.1:{args.port}", "run_pid": run.pid}
    try:
        wait_for(
            "the first version to serve", lambda: endpoint_ready(summary["url"]), args.timeout, run
        )
        md = state_of(state, "ModelDeployment", "digits")
        summary["first_version"] = md["activeVersion"]
        log(f"serving version {md['activeVersion']} at {summary['url']}")
        accuracy, _ = asyncio.run(served_accuracy(summary["url"], x, y))
        summary["accuracy"] = accuracy
        log(f"served accuracy on {len(x)} held-out digits: {accuracy:.4f}")

        log(f"load burst: {args.clients} clients for {args.burst_seconds:.0f}s")
        counts = asyncio.run(burst(summary["url"], x, args.burst_seconds, args.clients, state))
        peak = counts["peak_replicas"]
        summary.update(burst_ok=counts["ok"], burst_failed=counts["failed"], peak_replicas=peak)
        log(f"burst done: {counts['ok']} ok, {counts['failed']} failed; replicas peaked at {peak}")
        wait_for(
            "the replicas to scale back down",
            lambda: state_of(state, "ModelDeployment", "digits").get("desiredReplicas") == 1,
            args.timeout,
            run,
        )
        summary["replicas_after"] = 1
        log("scaled back down to 1 replica")

        train = root / "quickstart" / "data" / "train"
        for shard in held_back:  # copy under a temporary name, then rename: all appear at once
            shutil.copy(shard, train / f".{shard.name}.tmp")
        for shard in held_back:
            (train / f".{shard.name}.tmp").rename(train / shard.name)
        log(f"appended {len(held_back)} new shard(s); waiting for the incremental update")
        before = summary["first_version"]
        iu = wait_for(
            "an update run to finish",
            lambda: (s := state_of(state, "IncrementalUpdate", "digits")).get("history") and s,
            args.timeout,
            run,
        )
        last = iu["history"][-1]
        summary["update"] = last
        log(f"update run {last['trainingJob']}: {last['decision']} ({last['reason']})")
        if last["decision"] == "Promoted":
            md = wait_for(
                "the promoted version to serve",
                lambda: (
                    (s := state_of(state, "ModelDeployment", "digits")).get("activeVersion")
                    != before
                    and s
                ),
                args.timeout,
                run,
            )
            accuracy, served = asyncio.run(served_accuracy(summary["url"], x, y))
            summary.update(
                final_version=md["activeVersion"], final_accuracy=accuracy, served_version=served
            )
            log(f"now serving version {served}; held-out accuracy {accuracy:.4f}")
        if args.corrupt:
            runs = len(iu["history"])
            written = write_corrupted(root, count=4)
            log(f"appended {len(written)} shard(s) with shuffled labels")
            iu = wait_for(
                "the update run on corrupted data",
                lambda: (
                    len((s := state_of(state, "IncrementalUpdate", "digits")).get("history", []))
                    > runs
                    and s
                ),
                args.timeout,
                run,
            )
            record = iu["history"][-1]
            accuracy, served = asyncio.run(served_accuracy(summary["url"], x, y))
            summary.update(corrupt_update=record, corrupt_served_version=served)
            summary["corrupt_served_accuracy"] = accuracy
            log(f"update run {record['trainingJob']}: {record['decision']} ({record['reason']})")
            log(f"still serving version {served}; held-out accuracy {accuracy:.4f}")
        if args.keep_serving:
            log("serving until Ctrl-C")
            run.wait()
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
        summary["exit_code"] = run.returncode
        if args.summary:
            Path(args.summary).write_text(json.dumps(summary, indent=2, default=str))
    log(f"stopped (exit {run.returncode}); state kept in {state}")
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
