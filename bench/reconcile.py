#!/usr/bin/env python3
"""Benchmark the TrainingJob controller: 200 jobs applied at once, until all their pods exist.

    python bench/reconcile.py [--jobs 200] [--workers 1] [--threads 16] [--models 1] [--json]

Starts the local control plane (tests/controlplane/cluster.py) and the operator as a
process (`python -m modelops operator`, admission webhook on), then creates the jobs from
`--threads` client threads at once and measures:

- the time from the first create until every job's pods exist (head + workers each),
  and until every job has a status (the operator has reconciled it at least once);
- the operator's CPU time over that window, and its peak resident memory (VmHWM);
- the peer in the same run: the same number of pods created directly by a client with
  the same threads, i.e. what the API server on this machine allows without an operator.
  The ratio operator/direct is the operator's overhead.

Target: peak operator memory at most 300 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.cluster.operator_fixture import OperatorProcess, controlplane  # noqa: E402
from tests.cluster.trainingjob_helpers import GROUP, PLURAL, VERSION, manifest  # noqa: E402

TARGET_PEAK_MB = 300.0
POLL_S = 0.5


def _namespace(cp: Any, name: str) -> str:
    cp.rest.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    controlplane.poll_until(
        f"default ServiceAccount in {name}",
        lambda: cp.rest.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=60,
    )
    return name


def _count(cp: Any, path: str) -> int:
    # A table-less count: limit=1 and the remaining count would be cheaper, but the
    # watch cache answers full lists fast enough at this size.
    return len(cp.rest.request("GET", path, timeout=60)["items"])


def _wait_count(
    cp: Any,
    path: str,
    expected: int,
    started: float,
    timeout: float,
    operator: OperatorProcess | None = None,
) -> float:
    last_report = 0.0
    while True:
        count = _count(cp, path)
        elapsed = time.monotonic() - started
        if operator is not None and (elapsed - last_report >= 5.0 or count >= expected):
            last_report = elapsed
            print(
                f"  {elapsed:6.1f}s  pods {count:4}/{expected}  {_loop_state(operator)}", flush=True
            )
        if count >= expected:
            return elapsed
        if elapsed > timeout:
            raise TimeoutError(f"{path}: fewer than {expected} after {timeout}s")
        time.sleep(POLL_S)


def _loop_state(operator: OperatorProcess) -> str:
    """The operator's own view: reconciles done, queued and running, and its CPU so far."""
    labels = {"resource": "trainingjobs", "handler": "reconcile", "result": "success"}
    done = operator.metric("modelops_reconcile_total", **labels) or 0
    queued = operator.metric("modelops_reconcile_queue", resource="trainingjobs") or 0
    running = operator.metric("modelops_reconcile_in_flight", resource="trainingjobs") or 0
    loops = operator.metric("modelops_managed_objects", resource="trainingjobs") or 0
    return (
        f"loops {loops:4.0f}  reconciles {done:5.0f}  queued {queued:3.0f}  running {running:2.0f}"
        f"  cpu {operator.cpu_seconds():5.1f}s"
    )


def direct_pods(cp: Any, namespace: str, count: int, threads: int) -> float:
    """The peer: create `count` bare pods with `threads` client threads; seconds until all exist."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"bench": "direct"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/bench:1"}],
        },
    }
    path = f"/api/v1/namespaces/{namespace}/pods"
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda i: cp.rest.post(
                    path, {**body, "metadata": {**body["metadata"], "name": f"p-{i}"}}
                ),
                range(count),
            )
        )
    return _wait_count(cp, f"{path}?labelSelector=bench%3Ddirect", count, started, 600)


def operator_jobs(
    cp: Any,
    operator: OperatorProcess,
    namespace: str,
    jobs: int,
    workers: int,
    threads: int,
    models: int,
) -> dict[str, float]:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    bodies = [
        manifest(
            f"bench-{i}",
            model=f"model-{i % models}",
            resources={"workers": workers, "cpusPerWorker": "100m", "memoryPerWorker": "128Mi"},
        )
        for i in range(jobs)
    ]
    cpu_before = operator.cpu_seconds()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: cp.rest.post(path, b), bodies))
    applied = time.monotonic() - started
    pods = f"/api/v1/namespaces/{namespace}/pods?labelSelector=modelops.dev%2Ftrainingjob"
    pods_s = _wait_count(cp, pods, jobs * (1 + workers), started, 900, operator)
    cpu_pods = operator.cpu_seconds() - cpu_before

    def reconciled() -> bool:
        items = cp.rest.request("GET", path, timeout=60)["items"]
        return sum(1 for job in items if (job.get("status") or {}).get("phase")) >= jobs

    while not reconciled():
        time.sleep(POLL_S)
    status_s = time.monotonic() - started
    cpu_status = operator.cpu_seconds() - cpu_before
    return {
        "applied_s": round(applied, 2),
        "pods_exist_s": round(pods_s, 2),
        "all_reconciled_s": round(status_s, 2),
        "operator_cpu_s_until_pods": round(cpu_pods, 2),
        "operator_cpu_s_until_reconciled": round(cpu_status, 2),
    }


def api_latency(operator: OperatorProcess) -> dict[str, str]:
    """Mean latency and count of the operator's API requests, by verb and resource."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(operator.metrics()):
        if family.name != "modelops_api_request_duration_seconds":
            continue
        for sample in family.samples:
            key = f"{sample.labels['verb']} {sample.labels['resource']}"
            if sample.name.endswith("_sum"):
                sums[key] = sums.get(key, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[key] = counts.get(key, 0.0) + sample.value
    return {
        key: f"{1000 * sums[key] / counts[key]:.0f} ms x {counts[key]:.0f}"
        for key in sorted(counts)
        if counts[key]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="worker pods per job")
    parser.add_argument("--threads", type=int, default=16, help="client threads applying jobs")
    parser.add_argument(
        "--operator-workers", type=int, default=None, help="the operator's reconcile threads"
    )
    parser.add_argument(
        "--models", type=int, default=1, help="model names (1: every job allocates from one book)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    cp = controlplane.ControlPlane()
    cp.start()
    operator = None
    try:
        direct_ns = _namespace(cp, "bench-direct")
        pods = args.jobs * (1 + args.workers)
        direct_s = direct_pods(cp, direct_ns, pods, args.threads)

        namespace = _namespace(cp, "bench-operator")
        extra = ["--workers", str(args.operator_workers)] if args.operator_workers else []
        operator = OperatorProcess(
            cp, [namespace], name=f"bench-{int(time.time())}", extra_args=extra
        )
        operator.start()
        rss_idle = operator.peak_rss_bytes()
        result = operator_jobs(
            cp, operator, namespace, args.jobs, args.workers, args.threads, args.models
        )
        time.sleep(5)  # status writes and events settle
        peak = operator.peak_rss_bytes()
        latency = api_latency(operator)
        result.update(
            {
                "jobs": args.jobs,
                "pods": pods,
                "direct_pods_exist_s": round(direct_s, 2),
                "ratio_operator_to_direct": round(result["pods_exist_s"] / direct_s, 2),
                "operator_peak_rss_mb_idle": round(rss_idle / 1e6, 1),
                "operator_peak_rss_mb": round(peak / 1e6, 1),
                "target_peak_rss_mb": TARGET_PEAK_MB,
                "reconciles": operator.metric(
                    "modelops_reconcile_total",
                    resource="trainingjobs",
                    handler="reconcile",
                    result="success",
                )
                or 0.0,
            }
        )
    finally:
        if operator is not None:
            operator.close()
        cp.stop()

    if args.json:
        print(json.dumps({**result, "api_latency": latency}, indent=2))
    else:
        print(f"{'measure':42} value")
        for key, value in result.items():
            print(f"{key:42} {value}")
        print("\noperator's API requests (mean latency x count):")
        for key, value in latency.items():
            print(f"  {key:40} {value}")
        print(
            f"\noperator vs direct pod creation: {result['ratio_operator_to_direct']}x "
            f"({result['pods_exist_s']}s vs {result['direct_pods_exist_s']}s for {pods} pods)"
        )
    ok = result["operator_peak_rss_mb"] <= TARGET_PEAK_MB
    print(f"peak memory {'within' if ok else 'ABOVE'} the {TARGET_PEAK_MB:.0f} MB target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
