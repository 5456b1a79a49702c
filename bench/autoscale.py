#!/usr/bin/env python3
"""Benchmark the autoscaler: reaction to a 10x load step, and steadiness under noisy load.

    python bench/autoscale.py [--no-live] [--noise-seconds 300] [--json]

Live part (real control plane, the operator as a process, two real inference
servers on loopback, an open-loop aiohttp load generator):
  1. a 10x step (8 -> 80 rps, target 10 rps per replica): seconds from the step
     to the first replica count written through the scale subresource, and to
     the full count (8), with the spec's defaults (5 s interval, the HPA's
     default rate limits) and with a fast setting (1 s interval, +1000%/period);
  2. replica changes the operator writes during `--noise-seconds` (default 5
     minutes, real time) of steady load whose rate is redrawn every 5 s
     uniformly within +-20% of 50 rps, starting from the count that fits (5).
Peers on the same load: the servers' rps in each 5-s interval of that run,
recorded, then fed (simulated time) to our policy, to the same algorithm with
the HPA's defaults (tolerance 0.1 instead of our 0.2) and with both windows set
to 0 as well, and to Ray Serve's delay logic with its defaults (30 s up, 600 s
down). With --no-live only this
part runs (no control plane).
The peer for the step: the HPA's default path, simulated with random phases:
metrics-server resolution 15 s, HPA sync 15 s, scale-up limited to
max(4 pods, 100%) per 15 s.
Targets: first write <= 10 s after a 10x step; <= 1 scale change in 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from modelops.api.deployment import AutoscalingSpec  # noqa: E402
from modelops.k8s.modeldeployment.metrics_source import Endpoint, scrape  # noqa: E402
from modelops.k8s.modeldeployment.samples import Totals  # noqa: E402
from modelops.lifecycle.autoscale import History, Observed, desired_replicas  # noqa: E402

TARGET_FIRST_WRITE_S = 10.0
TARGET_CHANGES = 1
PER_REPLICA = 10.0
BASE_RPS, STEP_RPS, NOISY_RPS = 8.0, 80.0, 50.0
INTERVAL = 5.0


# -- the peer: the HPA's default path, simulated ------------------------------------------


def hpa_default_path(trials: int = 20000, seed: int = 0) -> dict[str, float]:
    """Seconds from a step to the HPA's first write and to the full count (1 -> 8).

    A step at a uniformly random moment; metrics-server publishes a new value
    every 15 s (its default metric resolution, at a random phase); the HPA reads
    every 15 s (its default sync period, at another random phase). Optimistic for
    the HPA: the first value published after the step counts as showing it in
    full (in reality it averages over a window that straddles the step). Then
    scale-up is limited to max(4 pods, +100%) per 15 s: 1 -> 5 -> 8.
    """
    rng = random.Random(seed)
    first, full = [], []
    for _ in range(trials):
        scrape_phase, sync_phase = rng.uniform(0, 15), rng.uniform(0, 15)
        step = rng.uniform(0, 15)
        visible = scrape_phase + 15 * math.ceil((step - scrape_phase) / 15)
        write = sync_phase + 15 * math.ceil((visible - sync_phase) / 15)
        first.append(write - step)
        full_count = int(STEP_RPS / PER_REPLICA)
        replicas, t = min(full_count, max(1 + 4, 2)), write
        while replicas < full_count:
            t += 15
            replicas = min(full_count, max(replicas + 4, replicas * 2))
        full.append(t - step)
    return {
        "first_write_p50_s": round(statistics.median(first), 1),
        "first_write_p95_s": round(sorted(first)[int(0.95 * trials)], 1),
        "full_count_p50_s": round(statistics.median(full), 1),
    }


# -- noisy load, real samples, the policies ------------------------------------------------


def noisy(load: Any, mean: float, seconds: float, stop: threading.Event) -> None:
    """Every 5 s (one autoscaler interval) a new rate drawn uniformly within +-20% of the mean."""
    rng = random.Random(1)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        load.set_rate(mean * rng.uniform(0.8, 1.2))
        stop.wait(INTERVAL)


async def rps_samples(urls: list[str], seconds: int) -> list[float]:
    """One rps reading per 5 s, from the servers' own counters (as the loop reads them)."""
    endpoints = [Endpoint(u, u.removeprefix("http://")) for u in urls]
    totals, out = Totals(), []
    async with aiohttp.ClientSession() as session:
        previous = totals.add(time.time(), await scrape(session, endpoints, "digits"))
        for _ in range(int(seconds / INTERVAL)):
            await asyncio.sleep(INTERVAL)
            latest = totals.add(time.time(), await scrape(session, endpoints, "digits"))
            out.append(latest.since(previous).requests / (latest.time - previous.time))
            previous = latest
    return out


def count_changes(config: AutoscalingSpec, samples: list[float], interval: float = 5.0) -> int:
    start = max(1, math.ceil(statistics.mean(samples) / config.target))
    history, replicas, changes = History.start(0.0, start), start, 0
    for i, load in enumerate(samples, start=1):
        decision = desired_replicas(config, Observed(replicas, load), history, i * interval)
        history, replicas = decision.history, decision.replicas
        changes += decision.changed
    return changes


def ray_serve_changes(samples: list[float], interval: float = 5.0) -> int | None:
    """Ray Serve's own delay logic (defaults) on the same samples; None without Ray."""
    try:
        from ray.serve.autoscaling_policy import _apply_delay_logic
        from ray.serve.config import AutoscalingConfig
    except ImportError:
        return None
    config = AutoscalingConfig(
        min_replicas=1, max_replicas=100, target_ongoing_requests=PER_REPLICA
    )
    replicas = max(1, math.ceil(statistics.mean(samples) / PER_REPLICA))
    state: dict[str, Any] = {}
    changes = 0
    for i, load in enumerate(samples, start=1):
        desired = max(1, math.ceil(load / PER_REPLICA))
        decided, state = _apply_delay_logic(desired, replicas, config, state, _now=i * interval)
        changes += decided != replicas
        replicas = decided
    return changes


# -- the live part -------------------------------------------------------------------------


def live(noise_seconds: int, store: str, urls: list[str], load: Any) -> dict[str, Any]:
    from tests.cluster.conftest import load_controlplane
    from tests.cluster.modeldeployment_helpers import Deployments
    from tests.cluster.modeldeployment_helpers import manifest as md_manifest
    from tests.cluster.operator_fixture import OperatorProcess

    cluster = load_controlplane()
    cp = cluster.ControlPlane()
    cp.start()
    ns = "bench-autoscale"
    endpoints = [u.removeprefix("http://") for u in urls]
    out: dict[str, Any] = {}
    try:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        cp.rest.post("/api/v1/namespaces", namespace)
        cluster.poll_until(
            "default SA",
            lambda: cp.rest.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default"),
            timeout=30,
        )
        operator = OperatorProcess(cp, [ns], webhook=False, name="bench-autoscale")
        operator.start()
        client = cp.api_client()
        mds = Deployments(client, ns)
        try:
            variants = {
                "defaults": {"intervalSeconds": 5},
                "fast": {
                    "intervalSeconds": 1,
                    "scaleUp": {"stabilizationSeconds": 0, "maxStepPercent": 1000},
                },
            }
            for label, extra in variants.items():
                out[f"step_{label}"] = _step(
                    mds, cluster, load, endpoints, store, label, extra, md_manifest
                )
            out["live_noise"] = _steady(mds, cluster, load, urls, store, noise_seconds, md_manifest)
        finally:
            operator.close()
            client.close()
    finally:
        cp.stop()
    return out


def collect_samples(urls: list[str], load: Any, seconds: int) -> list[float]:
    """Noisy load for `seconds`, and the rps the servers saw in each 5-s interval."""
    stop = threading.Event()
    driver = threading.Thread(target=noisy, args=(load, NOISY_RPS, seconds + INTERVAL, stop))
    driver.start()
    try:
        return asyncio.run(rps_samples(urls, seconds))
    finally:
        stop.set()
        driver.join()
        load.set_rate(BASE_RPS)


def _step(mds: Any, cluster: Any, load: Any, endpoints: list[str], store: str, label: str,
          extra: dict[str, Any], manifest: Any) -> dict[str, Any]:  # fmt: skip
    name = f"step-{label}"
    autoscaling = {"minReplicas": 1, "maxReplicas": 20, "target": PER_REPLICA, **extra}
    load.set_rate(BASE_RPS)
    mds.create(manifest(name, store, endpoints, autoscaling=autoscaling))
    cluster.poll_until(
        f"{name} serving", lambda: mds.status(name).get("activeVersion") == 1, timeout=60
    )
    time.sleep(12)  # settle at 1 replica on the base load
    before = mds.scale(name)["spec"]["replicas"]
    load.set_rate(STEP_RPS)
    stepped = time.monotonic()
    first = full = None
    while time.monotonic() - stepped < 90 and full is None:
        replicas = mds.scale(name)["spec"]["replicas"]
        if first is None and replicas != before:
            first = time.monotonic() - stepped
        if replicas >= STEP_RPS / PER_REPLICA:
            full = time.monotonic() - stepped
        time.sleep(0.1)
    load.set_rate(BASE_RPS)
    mds.custom.delete_namespaced_custom_object(
        "modelops.dev", "v1alpha1", mds.ns, "modeldeployments", name
    )
    return {
        "from_replicas": before,
        "first_write_s": round(first, 2) if first is not None else None,
        "full_count_s": round(full, 2) if full is not None else None,
    }


def _steady(mds: Any, cluster: Any, load: Any, urls: list[str], store: str, seconds: int,
            manifest: Any) -> dict[str, Any]:  # fmt: skip
    endpoints = [u.removeprefix("http://") for u in urls]
    name = "steady"
    load.set_rate(NOISY_RPS)
    mds.create(
        manifest(
            name,
            store,
            endpoints,
            replicas=5,
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 20,
                "target": PER_REPLICA,
                "intervalSeconds": 5,
            },
        )
    )
    cluster.poll_until(
        "steady serving", lambda: mds.status(name).get("activeVersion") == 1, timeout=60
    )
    writes, last = 0, mds.scale(name)["spec"]["replicas"]
    samples: list[float] = []
    sampler = threading.Thread(
        target=lambda: samples.extend(collect_samples(urls, load, seconds)), daemon=True
    )
    sampler.start()
    while sampler.is_alive():
        replicas = mds.scale(name)["spec"]["replicas"]
        writes += replicas != last
        last = replicas
        time.sleep(0.5)
    mds.custom.delete_namespaced_custom_object(
        "modelops.dev", "v1alpha1", mds.ns, "modeldeployments", name
    )
    return {"seconds": seconds, "scale_changes": writes, "final_replicas": last, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--no-live", action="store_true", help="skip the control-plane part")
    parser.add_argument("--noise-seconds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from tests.cluster.modeldeployment_helpers import Load, input_rows, make_store, servers

    results: dict[str, Any] = {"hpa_default_path": hpa_default_path()}
    with tempfile.TemporaryDirectory() as work:
        store = make_store(Path(work) / "store")
        with (
            servers(store, 2, Path(work)) as started,
            Load([s.url for s in started], input_rows()) as load,
        ):
            urls = [s.url for s in started]
            if args.no_live:
                samples = collect_samples(urls, load, args.noise_seconds)
            else:
                results.update(live(args.noise_seconds, store, urls, load))
                samples = results["live_noise"].pop("samples")
    if samples:
        sixty = samples  # one per 5-s interval: 60 in 5 minutes
        ours = AutoscalingSpec(target=PER_REPLICA, max_replicas=100)
        hpa = ours.model_copy(update={"tolerance": 0.1})  # the HPA's defaults
        bare = hpa.model_copy(
            update={
                "scale_up": ours.scale_up.model_copy(update={"stabilization_seconds": 0}),
                "scale_down": ours.scale_down.model_copy(update={"stabilization_seconds": 0}),
            }
        )
        results["simulated_5min"] = {
            "samples": len(sixty),
            "rps_mean": round(statistics.mean(sixty), 1),
            "rps_min_max": [round(min(sixty), 1), round(max(sixty), 1)],
            "changes_ours": count_changes(ours, sixty),
            "changes_hpa_defaults": count_changes(hpa, sixty),
            "changes_hpa_without_windows": count_changes(bare, sixty),
            "changes_ray_serve_defaults": ray_serve_changes(sixty),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
        hpa = results["hpa_default_path"]
        for label in ("defaults", "fast"):
            step = results.get(f"step_{label}")
            if step and step.get("first_write_s"):
                ratio = hpa["first_write_p50_s"] / step["first_write_s"]
                print(f"10x step, {label}: first write {step['first_write_s']} s "
                      f"(target <= {TARGET_FIRST_WRITE_S}); HPA default path p50 "
                      f"{hpa['first_write_p50_s']} s: {ratio:.1f}x faster")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
