#!/usr/bin/env python3
"""Benchmark the local control plane: warm start-to-ready time and resident memory.

    python bench/controlplane.py [--runs 3] [--settle 10] [--json]

Each run starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok from the
cached binaries (built first if missing, which is not timed), waits until nodes are Ready, CRDs
are Established and the default ServiceAccount exists, then samples the RSS of the five
processes right away and again after ``--settle`` seconds, and stops everything.
Target: ready in under 20 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

TARGET_READY_S = 20.0
CLUSTER_PY = Path(__file__).resolve().parents[1] / "tests" / "controlplane" / "cluster.py"


def load_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modelops_controlplane", CLUSTER_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (a load-independent measure of start-up work)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return os.getloadavg()[0]


def one_run(cluster: ModuleType, settle: float) -> dict[str, Any]:
    cp = cluster.ControlPlane()
    load = load_average()
    cp.start()
    try:
        cpu = sum(cpu_seconds(pid) for pid in cp.pids().values())
        per_process = {name: cluster.rss_bytes(pid) for name, pid in cp.pids().items()}
        rss_ready = sum(per_process.values())
        time.sleep(settle)
        per_process_settled = {name: cluster.rss_bytes(pid) for name, pid in cp.pids().items()}
        return {
            "ready_s": round(cp.ready_seconds, 2),
            "cpu_s_to_ready": round(cpu, 1),
            "loadavg_1m_at_start": round(load, 1),
            "phases_s": {k: round(v, 2) for k, v in cp.timings.items()},
            "rss_ready_mib": round(rss_ready / 2**20, 1),
            "rss_settled_mib": round(sum(per_process_settled.values()) / 2**20, 1),
            "rss_settled_per_process_mib": {
                k: round(v / 2**20, 1) for k, v in per_process_settled.items()
            },
        }
    finally:
        cp.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before 2nd RSS sample")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    cluster = load_cluster()
    cluster.build()  # no-op when the binaries are cached; not part of the timing
    runs = []
    for i in range(args.runs):
        run = one_run(cluster, args.settle)
        runs.append(run)
        if not args.json:
            print(
                f"run {i + 1}: ready in {run['ready_s']:.1f}s ({run['cpu_s_to_ready']:.0f} CPU-s, "
                f"load {run['loadavg_1m_at_start']:.1f} on {os.cpu_count()} CPUs), "
                f"RSS {run['rss_ready_mib']:.0f} MiB at ready, "
                f"{run['rss_settled_mib']:.0f} MiB after {args.settle:.0f}s",
                flush=True,
            )
    ready = [r["ready_s"] for r in runs]
    median = statistics.median(ready)
    summary = {
        "versions": cluster.versions_key(),
        "runs": runs,
        "ready_s": {"min": min(ready), "median": median, "max": max(ready)},
        "target_ready_s": TARGET_READY_S,
        "ratio_to_target": round(median / TARGET_READY_S, 2),
        "rss_settled_mib_median": statistics.median(r["rss_settled_mib"] for r in runs),
        "cpu_s_to_ready_median": statistics.median(r["cpu_s_to_ready"] for r in runs),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"start-to-ready: min {min(ready):.1f}s, median {median:.1f}s, max {max(ready):.1f}s; "
            f"target {TARGET_READY_S:.0f}s, ratio {summary['ratio_to_target']:.2f} "
            f"(<1 meets the target)"
        )
        print(f"RSS (5 processes, settled): median {summary['rss_settled_mib_median']:.0f} MiB")
        print(f"CPU time to ready (5 processes): median {summary['cpu_s_to_ready_median']:.1f}s")
        print("last run phases (s since start):", json.dumps(runs[-1]["phases_s"]))
        print(
            "last run RSS per process (MiB):", json.dumps(runs[-1]["rss_settled_per_process_mib"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
