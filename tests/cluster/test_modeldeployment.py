"""The ModelDeployment controller on the real control plane, with real inference servers.

The operator runs as a process against the test control plane; the inference
servers are real processes on loopback, named to the operator by the
`modelops.dev/metrics-endpoints` annotation (KWOK pods run no containers). Load
comes from an aiohttp client; every answer's status and version is counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelops.lifecycle.training_report import TrainingResult
from tests.cluster.modeldeployment_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Deployments,
    Load,
    condition,
    input_rows,
    make_store,
    manifest,
    routing,
    servers,
    truth,
)
from tests.cluster.operator_fixture import OperatorProcess, running_operator, wait_for
from tests.cluster.trainingjob_helpers import Cluster
from tests.cluster.trainingjob_helpers import manifest as tj_manifest
from tests.runtime.serve_helpers import CaptureServer, ServerProcess

pytestmark = pytest.mark.cluster
LOG_ROOT = Path(__file__).resolve().parents[2] / ".state" / "server-logs"


@pytest.fixture
def store(tmp_path: Path, namespace: str) -> str:
    return make_store(tmp_path / "store", namespace)


@pytest.fixture
def live(
    store: str, namespace: str, request: pytest.FixtureRequest
) -> Iterator[list[ServerProcess]]:
    # Logs go where they outlive pytest's temporary folders.
    logs = LOG_ROOT / request.node.name
    logs.mkdir(parents=True, exist_ok=True)
    # The servers read the namespace's folder, as the operator's pods would.
    with servers(f"{store}/{namespace}", 2, logs) as started:
        yield started


@pytest.fixture
def operator(control_plane: Any, namespace: str) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, [namespace], name=f"md-{namespace}") as process:
        yield process


@pytest.fixture
def mds(k8s: Any, namespace: str) -> Deployments:
    return Deployments(k8s, namespace)


def addresses(live: list[ServerProcess]) -> list[str]:
    return [f"127.0.0.1:{s.port}" for s in live]


def replicas(mds: Deployments, name: str) -> int:
    return int(mds.scale(name)["spec"].get("replicas") or 0)


def test_a_load_step_scales_up_and_a_drop_scales_down_after_the_window(
    operator: OperatorProcess, live: list[ServerProcess], mds: Deployments, store: str
) -> None:
    window = 15
    mds.create(
        manifest(
            "scaler",
            store,
            addresses(live),
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 8,
                "metric": "rps",
                "target": 10,
                "intervalSeconds": 1,
                "scaleDown": {"stabilizationSeconds": window},
            },
        )
    )
    mds.wait("serving version 1", "scaler", lambda s: s.get("activeVersion") == 1)
    wait_for("1 replica", lambda: replicas(mds, "scaler") == 1)
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(5)
        time.sleep(4)
        assert replicas(mds, "scaler") == 1, "5 rps fits one replica at 10 rps each"

        load.set_rate(60)
        stepped = time.monotonic()
        wait_for("scale-up to >= 5", lambda: replicas(mds, "scaler") >= 5, timeout=30)
        up_seconds = time.monotonic() - stepped
        wait_for(
            "the Deployment follows",
            lambda: (mds.deployment("scaler").spec.replicas or 0) >= 5,
            timeout=15,
        )
        # The scale subresource is written first; the status that explains it follows.
        status = wait_for(
            "the scale decision in status",
            lambda: (s := mds.status("scaler")).get("lastScale") and s,
            timeout=15,
        )
        assert status["lastScale"]["toReplicas"] >= 5
        assert status["autoscaler"]["metric"] == "rps"
        high = replicas(mds, "scaler")

        load.set_rate(5)
        dropped = time.monotonic()
        time.sleep(window * 0.6)
        assert replicas(mds, "scaler") == high, "no scale-down inside the window"
        wait_for("scale-down", lambda: replicas(mds, "scaler") <= 2, timeout=window + 30)
        down_seconds = time.monotonic() - dropped
    assert down_seconds >= window
    assert up_seconds < 15
    assert load.failed == 0, load.statuses
    final = mds.status("scaler")
    assert final["lastScale"]["reason"].startswith("ScaledDown")
    assert final["metrics"]["rps"] > 0
    print(f"scale-up after {up_seconds:.1f}s, scale-down after {down_seconds:.1f}s")


def canary_spec(**analysis: Any) -> dict[str, Any]:
    return {
        "replicas": 2,
        "autoscaling": {"enabled": False, "intervalSeconds": 1},
        "rollout": {
            "strategy": "canary",
            "steps": [{"weight": 50, "pauseSeconds": 4}],
            "analysis": {"maxErrorRate": 0.05, "minAccuracy": 0.8, "minRequests": 20, **analysis},
        },
    }


def test_a_failing_canary_rolls_back_and_a_passing_one_is_promoted(
    operator: OperatorProcess, live: list[ServerProcess], mds: Deployments, store: str
) -> None:
    rows = input_rows()
    labels = truth(live[0], rows)
    mds.create(manifest("canary", store, addresses(live), **canary_spec()))
    mds.wait("serving version 1", "canary", lambda s: s.get("activeVersion") == 1)
    with Load([s.url for s in live], rows, labels) as load:
        load.set_rate(40)
        mds.patch("canary", {"spec": {"model": {"version": "3"}}})
        mds.wait("canary of 3", "canary", lambda s: s.get("candidateVersion") == 3, timeout=30)
        status = mds.wait(
            "rollback of 3",
            "canary",
            lambda s: any(r["version"] == 3 for r in s.get("rollbacks", [])),
            timeout=60,
        )
        assert load.versions["3"] > 0, "the candidate answered part of the traffic"
        assert status["activeVersion"] == 1 and "candidateVersion" not in status
        degraded = condition(status, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
        assert "accuracy" in status["rollbacks"][-1]["reason"]
        assert status["gate"]["outcome"] == "Fail"
        wait_for("a RolledBack event", lambda: mds.events("RolledBack"), timeout=20)
        wait_for(
            "servers back on version 1 alone",
            lambda: all(routing(s)["routing"]["candidate"] is None for s in live),
        )

        mds.patch("canary", {"spec": {"model": {"version": "2"}}})
        status = mds.wait(
            "promotion of 2", "canary", lambda s: s.get("activeVersion") == 2, timeout=60
        )
        assert [p["version"] for p in status["promotions"]][-1] == 2
        assert condition(status, "Degraded")["status"] == "False"
        wait_for(
            "servers on version 2",
            lambda: all(routing(s)["routing"]["stable"] == "2" for s in live),
        )
        wait_for(
            "the pod template names version 2",
            lambda: (
                mds.deployment("canary").spec.template.metadata.annotations[
                    "modelops.dev/model-version"
                ]
                == "2"
            ),
        )
    assert load.failed == 0, (load.statuses, load.errors[:3])


def test_a_new_version_rolls_out_with_no_failed_requests(
    operator: OperatorProcess, live: list[ServerProcess], mds: Deployments, store: str
) -> None:
    mds.create(
        manifest(
            "rolling",
            store,
            addresses(live),
            autoscaling={"enabled": False, "intervalSeconds": 1},
            replicas=2,
        )
    )
    mds.wait("serving version 1", "rolling", lambda s: s.get("activeVersion") == 1)
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(50)
        time.sleep(2)
        mds.patch("rolling", {"spec": {"model": {"version": "2"}}})
        mds.wait("version 2", "rolling", lambda s: s.get("activeVersion") == 2, timeout=30)
        wait_for(
            "answers from version 2",
            lambda: all(routing(s)["routing"]["stable"] == "2" for s in live),
        )
        before = load.versions["2"]
        time.sleep(3)
        assert load.versions["2"] > before
    assert load.total > 200
    assert load.failed == 0, (load.statuses, load.errors[:3])
    assert load.versions["1"] > 0 and load.versions["2"] > 0


def test_shadow_mirrors_and_reports_then_promotes(
    operator: OperatorProcess, live: list[ServerProcess], mds: Deployments, store: str
) -> None:
    mds.create(
        manifest(
            "shadow",
            store,
            addresses(live),
            replicas=1,
            autoscaling={"enabled": False, "intervalSeconds": 1},
            rollout={
                "strategy": "shadow",
                "shadowSeconds": 5,
                "analysis": {"minAgreement": 0.95, "minRequests": 30},
            },
        )
    )
    mds.wait("serving version 1", "shadow", lambda s: s.get("activeVersion") == 1)
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(30)
        mds.patch("shadow", {"spec": {"model": {"version": "2"}}})
        status = mds.wait(
            "a shadow report",
            "shadow",
            lambda s: (s.get("shadow") or {}).get("requests", 0) >= 30,
            timeout=40,
        )
        assert status["traffic"]["shadow"] is True
        assert status["shadow"]["version"] == 2
        assert load.versions["2"] == 0, "a shadow answers nobody"
        status = mds.wait("promotion", "shadow", lambda s: s.get("activeVersion") == 2, timeout=40)
    assert status["shadow"]["agreement"] == 1.0
    assert load.failed == 0


def test_kubectl_scale_and_batch_prediction_when_autoscaling_is_off(
    operator: OperatorProcess, mds: Deployments, store: str, tmp_path: Path
) -> None:
    output = tmp_path / "predictions"
    mds.create(
        manifest(
            "manual",
            store,
            [],
            autoscaling={"enabled": False, "intervalSeconds": 1},
            batchPrediction={"inputUri": "file:///data/in", "outputUri": f"file://{output}"},
        )
    )
    mds.wait("serving version 1", "manual", lambda s: s.get("activeVersion") == 1)
    mds.set_scale("manual", 3)
    wait_for("Deployment at 3", lambda: mds.deployment("manual").spec.replicas == 3)
    status = mds.wait("ready replicas", "manual", lambda s: s.get("readyReplicas") == 3, timeout=60)
    assert condition(status, "Available")["status"] == "True"
    assert status["selector"] == "modelops.dev/modeldeployment=manual,modelops.dev/role=server"
    status = mds.wait("batch prediction", "manual", lambda s: s.get("batchPrediction"))
    job_name = status["batchPrediction"]["jobName"]
    job = mds.batch.read_namespaced_job(job_name, mds.ns)
    args = job.spec.template.spec.containers[0].command
    assert args[args.index("--version") + 1] == "1"
    assert status["batchPrediction"]["outputUri"] == f"file://{output}"
    # The Job's pod runs nowhere under KWOK; write its progress file as it would.
    output.mkdir()
    progress = {"version": 1, "shards_total": 4, "shards_done": 3, "shards_skipped": 0}
    (output / "_progress.json").write_text(json.dumps(progress))
    status = mds.wait("progress", "manual", lambda s: s["batchPrediction"].get("shardsDone") == 3)
    assert status["batchPrediction"]["shardsTotal"] == 4


def _train(cluster: Cluster, name: str, version: int) -> None:
    """A TrainingJob of model digits that succeeds with `version` (playing kubelet and driver)."""
    cluster.create(tj_manifest(name, resources={"workers": 1}))
    cluster.wait_pods(name, {f"{name}-0-head", f"{name}-0-worker-0"})
    cluster.wait_phase(name, "Running")
    result = TrainingResult(version=version, uri=f"file:///models/digits/v{version}")
    cluster.succeed(f"{name}-0-head", result)
    cluster.wait_phase(name, "Succeeded")


def test_latest_follows_the_versions_training_jobs_produce(
    operator: OperatorProcess,
    live: list[ServerProcess],
    mds: Deployments,
    store: str,
    k8s: Any,
    namespace: str,
) -> None:
    mds.create(
        manifest(
            "follow",
            store,
            addresses(live),
            model={"name": "digits", "version": "latest", "storeUri": store},
            autoscaling={"enabled": False, "intervalSeconds": 1},
        )
    )
    status = mds.wait("no version yet", "follow", lambda s: s.get("conditions"))
    assert condition(status, "Available")["reason"] == "NoVersion"
    jobs = Cluster(k8s, namespace)
    _train(jobs, "first", 1)
    mds.wait("serving version 1", "follow", lambda s: s.get("activeVersion") == 1, timeout=60)
    with Load([s.url for s in live], input_rows()) as load:
        load.set_rate(30)
        _train(jobs, "second", 2)
        status = mds.wait("version 2", "follow", lambda s: s.get("activeVersion") == 2, timeout=60)
        wait_for("servers on 2", lambda: all(routing(s)["routing"]["stable"] == "2" for s in live))
    assert [p["version"] for p in status["promotions"]] == [1, 2]
    assert load.failed == 0, load.statuses


def test_a_stale_status_write_is_refused_and_recomputed_so_rollbacks_survive(
    control_plane: Any, mds: Deployments, store: str
) -> None:
    """A pass computed from a watched copy that lags a newer status (here: a rollback
    recorded after the copy was taken) must not overwrite it: the write is conditioned on
    the copy's resourceVersion, refused, and the next pass recomputes from a fresh read."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import aiohttp

    from modelops.k8s.controller.status import StatusConflict
    from modelops.k8s.kube import Kube
    from modelops.k8s.modeldeployment.builders import ServingSettings
    from modelops.k8s.modeldeployment.controller import ServingLoop, Shared, Views

    created = mds.create(manifest("stale", store, []))
    stale = mds.get("stale")  # what a lagging watch still shows
    rollback = {"version": 2, "time": "2026-12-01T00:00:00Z", "reason": "error rate 0.2 > 0.01"}
    mds.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, mds.ns, PLURAL, "stale", {"status": {"rollbacks": [rollback]}}
    )
    kube = Kube.connect(str(control_plane.kubeconfig))
    executor = ThreadPoolExecutor(max_workers=2)

    async def passes() -> None:
        async with aiohttp.ClientSession() as session:
            shared = Shared(
                kube=kube,
                settings=ServingSettings(image="modelops/runtime:test"),
                executor=executor,
                session=session,
            )
            views = Views(
                pods=lambda: [],
                deployment=lambda: None,
                jobs=lambda: [],
                trained=lambda model: {1},
            )
            loop = ServingLoop(shared, mds.ns, "stale", created["metadata"]["uid"], views)
            with pytest.raises(StatusConflict):
                await loop.run_once(stale)
            # The same lagging copy again: it predates the refused write, so it is read afresh.
            result = await loop.run_once(stale)
            assert result is not None
            # The pass's own scale write moved the generation; the next pass records it.
            assert await loop.run_once(mds.get("stale")) is not None

    try:
        asyncio.run(passes())
    finally:
        executor.shutdown()
        kube.close()
    current = mds.get("stale")
    status = current["status"]
    assert status["rollbacks"] == [rollback]
    assert status.get("observedGeneration") == current["metadata"]["generation"]
    assert status.get("conditions"), "the recomputed pass wrote its status"


def test_a_tenants_metrics_endpoints_annotation_is_ignored_by_default(
    control_plane: Any, namespace: str, mds: Deployments, store: str
) -> None:
    """The annotation would send the operator's scrapes and admin calls (with the
    deployment's admin token) to any address: only an operator started with
    MODELOPS_ENDPOINT_OVERRIDES honours it, and the chart never sets that."""
    capture = CaptureServer()
    env = {"MODELOPS_ENDPOINT_OVERRIDES": ""}
    try:
        with running_operator(
            control_plane, [namespace], name=f"md-nooverride-{namespace}", env=env
        ) as operator:
            mds.create(
                manifest(
                    "captured",
                    store,
                    [f"127.0.0.1:{capture.port}"],
                    autoscaling={"enabled": True, "intervalSeconds": 1},
                )
            )
            mds.wait("a status", "captured", lambda s: bool(s.get("phase")), timeout=60)
            wait_for(
                "the operator's warning",
                lambda: "ignoring modelops.dev/metrics-endpoints" in operator.log_path.read_text(),
                timeout=30,
            )
            time.sleep(3)  # several loop intervals
            assert capture.requests == [], capture.requests
    finally:
        capture.close()
