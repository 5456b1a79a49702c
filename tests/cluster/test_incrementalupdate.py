"""The IncrementalUpdate controller on the real control plane, with the operator as a process.

Real data: parquet shards under tmp_path (the operator runs on this host and lists
them), and a real stored version 1 whose snapshot.json is the runtime's snapshot of
those shards, so the delta is computed against real hashes.

Driving the pods: KWOK completes every Job pod at once, with no termination message.
So the recipe (and therefore its update runs and their evaluation pods, which follow
the recipe's node selector) asks for a node pool that does not exist: the pods stay
Pending, and the test plays the kubelet by patching their status, with the result
the driver (a TrainingResult) or `compare` (both versions' metrics) would write as
the container's termination message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kubernetes import client

from modelops.api.training import DataFormat
from modelops.lifecycle.training_report import TrainingResult
from modelops_runtime import artifacts
from modelops_runtime.data.shards import snapshot
from tests.cluster.modeldeployment_helpers import Deployments
from tests.cluster.modeldeployment_helpers import manifest as md_manifest
from tests.cluster.operator_fixture import OperatorProcess, running_operator, wait_for
from tests.cluster.trainingjob_helpers import Cluster, condition, manifest
from tests.runtime.serve_helpers import classifier_card

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "incrementalupdates"
MODEL = "digits"
RECIPE = "digits-mlp"
UPDATE = "digits"
NOWHERE = {"modelops.dev/pool": "nowhere"}
COLUMNS = ("f0", "f1", "f2", "f3", "target")


@pytest.fixture
def operator(control_plane: Any, namespace: str) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, [namespace], name=f"iu-{namespace}") as process:
        yield process


@pytest.fixture
def cluster(k8s: Any, namespace: str) -> Cluster:
    return Cluster(k8s, namespace)


# -- data and store -----------------------------------------------------------------------


def write_shard(path: Path, rows: int, seed: int, columns: tuple[str, ...] = COLUMNS) -> None:
    values = {
        c: [float((seed * 31 + i * 7 + j) % 17) for i in range(rows)] for j, c in enumerate(columns)
    }
    if columns[-1] in ("target", "label"):
        values[columns[-1]] = [(seed + i) % 10 for i in range(rows)]
    pq.write_table(pa.table(values), path)


@dataclass
class World:
    """The data folder, the store, and the cluster objects of one test."""

    cluster: Cluster
    data: Path
    store: str

    @property
    def data_uri(self) -> str:
        return f"file://{self.data}"

    @property
    def folder(self) -> str:
        """The namespace's folder of the store, where its versions go (default layout)."""
        return f"{self.store}/{self.cluster.ns}"

    def save_version(self, version: int) -> None:
        """A finished version whose snapshot is the data as it is now."""
        listing = snapshot(self.data_uri, DataFormat.PARQUET)
        folder = artifacts.version_uri(self.folder, MODEL, version)
        card = classifier_card(MODEL, version, [8], n_features=4)
        artifacts.save_version(folder, card, None, {"accuracy": 0.9}, listing)

    # -- the custom objects ---------------------------------------------------------------

    def create_update(self, **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IncrementalUpdate",
            "metadata": {"name": UPDATE},
            "spec": {
                "trainingJobRef": {"name": RECIPE},
                "detect": {"intervalSeconds": 5, "minNewShards": 1},
                "promotion": {"metric": "accuracy", "mode": "max", "maxRegression": 0.01},
                **spec,
            },
        }
        self.cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.cluster.ns, PLURAL, body
        )

    def update(self) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.cluster.ns, PLURAL, UPDATE
        )
        return found

    def status(self) -> dict[str, Any]:
        return self.update().get("status") or {}

    def wait_status(self, what: str, check: Any, timeout: float = 120.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status = self.status()
            return status if status and check(status) else None  # {} is no answer

        found: dict[str, Any] = wait_for(what, probe, timeout=timeout)
        return found

    def runs(self) -> list[str]:
        return sorted(
            j["metadata"]["name"]
            for j in self.cluster.jobs()
            if "modelops.dev/update" in (j["metadata"].get("labels") or {})
        )

    def evaluation_jobs(self) -> list[Any]:
        batch = client.BatchV1Api(self.cluster.core.api_client)
        items: list[Any] = batch.list_namespaced_job(
            self.cluster.ns, label_selector="modelops.dev/role=evaluation"
        ).items
        return items

    # -- playing the kubelet --------------------------------------------------------------

    def finish_pod(self, pod: str, message: str, phase: str = "Succeeded") -> None:
        """The main container exited and left `message` as its termination message."""
        current = self.cluster.pod(pod)
        container = current.spec.containers[0]
        terminated = {
            "exitCode": 0 if phase == "Succeeded" else 1,
            "reason": "Completed" if phase == "Succeeded" else "Error",
            "message": message,
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:01:00Z",
        }
        statuses = [
            {
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ]
        body = {"status": {"phase": phase, "containerStatuses": statuses}}
        self.cluster.core.patch_namespaced_pod_status(
            pod, self.cluster.ns, body, _content_type="application/merge-patch+json"
        )

    def train(self, job: str, version: int, accuracy: float = 0.95) -> dict[str, Any]:
        """The job's driver reports `version` (already in the store) and exits 0."""
        head = f"{job}-0-head"
        wait_for(f"{head} created", lambda: head in self.cluster.pod_names(job), timeout=60)
        result = TrainingResult(
            version=version,
            uri=artifacts.version_uri(self.folder, MODEL, version),
            metrics={"accuracy": accuracy},
        )
        self.finish_pod(head, result.encode())
        return self.cluster.wait_phase(job, "Succeeded", timeout=60)

    def evaluate(self, run: str, candidate: float, current: float) -> str:
        """The evaluation pod of `run` reports both versions' accuracy."""

        def pod() -> str | None:
            pods = self.cluster.core.list_namespaced_pod(
                self.cluster.ns, label_selector=f"modelops.dev/update-run={run}"
            ).items
            return pods[0].metadata.name if pods else None

        name: str = wait_for(f"evaluation pod of {run}", pod, timeout=90)
        report = {"candidate": {"accuracy": candidate}, "current": {"accuracy": current}}
        self.finish_pod(name, json.dumps(report))
        return name


def baseline(cluster: Cluster, tmp_path: Path) -> World:
    """Two shards, version 1 trained on them (stored, and reported by the recipe's job)."""
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "part-00000.parquet", 40, seed=1)
    write_shard(data / "part-00001.parquet", 40, seed=2)
    world = World(cluster, data, f"file://{tmp_path / 'store'}")
    world.save_version(1)
    recipe = manifest(
        RECIPE,
        model=MODEL,
        data={
            "uri": world.data_uri,
            "format": "parquet",
            "label": "target",
            "validationSplit": 0.2,
        },
        output={"modelName": MODEL, "storeUri": world.store},
        resources={"workers": 1, "nodeSelector": NOWHERE},
    )
    cluster.create(recipe)
    world.train(RECIPE, 1)
    return world


def events(cluster: Cluster, expect: str | None = None) -> list[str]:
    """Reasons of the update's events, oldest first (the ModelDeployment shares its name).

    Events are posted after the status write that records the same outcome, so a caller
    that just saw the status names the reason it `expect`s and waits for it."""
    if expect is not None:
        wait_for(f"a {expect} event", lambda: expect in events(cluster), timeout=30)
    items = cluster.core.list_namespaced_event(
        cluster.ns,
        field_selector=f"involvedObject.name={UPDATE},involvedObject.kind=IncrementalUpdate",
    ).items
    ordered = sorted(items, key=lambda e: e.event_time or e.metadata.creation_timestamp)
    return [e.reason for e in ordered]


# -- the tests ----------------------------------------------------------------------------


def test_new_shards_run_an_update_that_is_promoted_and_rolled_out_across_a_restart(
    operator: OperatorProcess, cluster: Cluster, k8s: Any, namespace: str, tmp_path: Path
) -> None:
    world = baseline(cluster, tmp_path)
    mds = Deployments(k8s, namespace)
    # No inference servers run under KWOK: the routing calls go to a closed port.
    mds.create(
        md_manifest(
            "digits",
            world.store,
            ["127.0.0.1:1"],
            model={"name": MODEL, "version": "latest", "storeUri": world.store},
            autoscaling={"enabled": False, "intervalSeconds": 1},
        )
    )
    mds.wait("serving version 1", "digits", lambda s: s.get("activeVersion") == 1, timeout=90)

    world.create_update()
    status = world.wait_status(
        "first listing", lambda s: (s.get("lastSnapshot") or {}).get("shards") == 2
    )
    assert status["modelName"] == MODEL
    assert status["pendingDelta"] == {
        "newShards": 0,
        "changedShards": 0,
        "deletedShards": 0,
        "newRows": 0,
    }
    assert status["phase"] == "Idle"
    ready = condition(status, "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "Watching"
    assert world.runs() == []

    write_shard(world.data / "part-00002.parquet", 25, seed=3)
    run = "digits-run-1"
    wait_for("the update run", lambda: world.runs() == [run], timeout=60)
    child = cluster.job(run)
    update_uid = world.update()["metadata"]["uid"]
    owner = child["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "IncrementalUpdate",
        update_uid,
        True,
    )
    assert child["metadata"]["labels"]["modelops.dev/update"] == UPDATE
    assert child["metadata"]["labels"]["modelops.dev/model"] == MODEL
    warm = child["spec"]["warmStart"]
    assert (warm["version"], warm["deltaOnly"], warm["modelName"]) == (1, True, MODEL)
    status = world.status()
    assert status["phase"] == "Training"
    assert status["currentRun"]["trainingJob"] == run
    assert status["currentRun"]["baseVersion"] == 1
    assert status["currentRun"]["delta"] == {
        "newShards": 1,
        "changedShards": 0,
        "deletedShards": 0,
        "newRows": 25,
    }

    # A restart mid-run: the new process finds the run by its recorded name.
    operator.kill()
    operator.start()
    world.save_version(2)  # what the run's driver writes to the store
    world.train(run, 2)
    jobs = wait_for("the evaluation Job", lambda: world.evaluation_jobs() or None, timeout=60)
    assert [j.metadata.name for j in jobs] == ["digits-run-1-eval"]
    command = jobs[0].spec.template.spec.containers[0].command
    assert command[command.index("--candidate") + 1] == "2"
    assert command[command.index("--current") + 1] == "1"
    assert command[command.index("--data") + 1] == world.data_uri  # the seeded split
    assert command[command.index("--part") + 1] == "validation"
    assert jobs[0].spec.template.spec.node_selector == NOWHERE
    assert world.status()["phase"] == "Evaluating"

    world.evaluate(run, candidate=0.97, current=0.95)
    status = world.wait_status("promoted", lambda s: s.get("lastResult") == "Promoted")
    assert status["promotedVersion"] == 2
    assert status["promotedVersions"] == [2]
    assert "currentRun" not in status
    (record,) = status["history"]
    assert record["trainingJob"] == run
    assert record["decision"] == "Promoted"
    assert (record["version"], record["currentVersion"]) == (2, 1)
    assert (record["candidateMetric"], record["currentMetric"]) == (0.97, 0.95)
    assert record["delta"]["newShards"] == 1 and record["delta"]["newRows"] == 25
    assert "0.9700 vs 0.9500" in record["reason"]
    promoted = condition(status, "LastRunPromoted")
    assert promoted is not None and promoted["status"] == "True"
    degraded = condition(status, "Degraded")
    assert degraded is not None and degraded["status"] == "False"
    # The listing now compares with version 2's snapshot: nothing is pending.
    status = world.wait_status("no delta", lambda s: s["pendingDelta"]["newShards"] == 0)
    assert world.runs() == [run] and len(world.evaluation_jobs()) == 1  # nothing duplicated
    found = events(cluster, expect="Promoted")
    assert [e for e in found if e in ("UpdateStarted", "Evaluating", "Promoted")] == [
        "UpdateStarted",
        "Evaluating",
        "Promoted",
    ]

    # The ModelDeployment following `latest` moves to the promoted version.
    mds.wait(
        "rolling out version 2",
        "digits",
        lambda s: 2 in (s.get("activeVersion"), s.get("candidateVersion")),
        timeout=90,
    )


def test_a_worse_candidate_is_rejected_and_the_current_version_keeps_serving(
    operator: OperatorProcess, cluster: Cluster, tmp_path: Path
) -> None:
    world = baseline(cluster, tmp_path)
    world.create_update()
    world.wait_status("first listing", lambda s: (s.get("lastSnapshot") or {}).get("shards") == 2)

    write_shard(world.data / "part-00002.parquet", 30, seed=4)
    run = "digits-run-1"
    wait_for("the update run", lambda: world.runs() == [run], timeout=60)
    world.save_version(2)
    world.train(run, 2)
    world.evaluate(run, candidate=0.90, current=0.95)

    status = world.wait_status("rejected", lambda s: s.get("lastResult") == "Rejected")
    assert "promotedVersion" not in status and status.get("promotedVersions", []) == []
    (record,) = status["history"]
    assert record["decision"] == "Rejected"
    assert (record["candidateMetric"], record["currentMetric"]) == (0.90, 0.95)
    assert (record["version"], record["currentVersion"]) == (2, 1)
    assert "regresses by 0.0500" in record["reason"]
    promoted = condition(status, "LastRunPromoted")
    assert promoted is not None and promoted["status"] == "False"
    assert promoted["reason"] == "Rejected"
    assert "Rejected" in events(cluster, expect="Rejected")

    # Version 1 still serves (the new data is still pending against it), and the same
    # data does not start the same run again.
    status = world.wait_status(
        "waiting for new data",
        lambda s: "waiting for new data" in (condition(s, "Ready") or {}).get("message", ""),
        timeout=60,
    )
    assert status["pendingDelta"]["newShards"] == 1
    assert status["runs"] == 1 and world.runs() == [run]


def test_new_shards_with_another_schema_fail_the_run_naming_the_column(
    operator: OperatorProcess, cluster: Cluster, tmp_path: Path
) -> None:
    world = baseline(cluster, tmp_path)
    world.create_update()
    world.wait_status("first listing", lambda s: (s.get("lastSnapshot") or {}).get("shards") == 2)

    renamed = (*COLUMNS[:-1], "label")
    write_shard(world.data / "part-00002.parquet", 30, seed=5, columns=renamed)
    status = world.wait_status("failed", lambda s: s.get("lastResult") == "Failed")
    (record,) = status["history"]
    assert record["decision"] == "Failed"
    assert record["reason"] == (
        "shard part-00002.parquet changed schema: missing column(s) target; "
        "unexpected column(s) label"
    )
    assert "version" not in record
    degraded = condition(status, "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "SchemaChanged"
    assert "missing column(s) target" in degraded["message"]
    assert "UpdateStarted" not in events(cluster, expect="Failed")
    assert world.runs() == [] and world.evaluation_jobs() == []  # checked before any child

    # Later listings (every 5 s) do not try the same data again.
    time.sleep(12)
    status = world.status()
    assert status["runs"] == 1 and len(status["history"]) == 1 and world.runs() == []


def _scan_pod(cluster: Cluster) -> Any:
    def pending() -> Any:
        pods = cluster.core.list_namespaced_pod(
            cluster.ns, label_selector="modelops.dev/role=scan"
        ).items
        waiting = [p for p in pods if p.status.phase == "Pending"]
        return waiting[0] if waiting else None

    return wait_for("a scan pod", pending, timeout=60)


def _run_scan_pod(pod: Any, tmp_path: Path) -> str:
    """Run the scan pod's own command here (the store is on this host): its real report."""
    (container,) = pod.spec.containers
    command = list(container.command)
    log = tmp_path / f"{pod.metadata.name}.termination-log"
    command[command.index("--termination-log") + 1] = str(log)
    assert command[:3] == ["python", "-m", "modelops_runtime"], command
    done = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=120
    )
    assert log.exists(), done.stderr
    return log.read_text()


def test_with_data_access_job_a_scan_pod_lists_the_data_and_the_operator_reads_none(
    control_plane: Any, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`dataAccess: job`: the listing runs in a pod of the update's namespace.

    The pod's command is run for real on this host (KWOK runs no process) and its
    termination message is what the operator decides on; the operator never lists the
    data itself (its listing would come without a scan pod).
    """
    env = {"MODELOPS_DATA_ACCESS": "job"}
    with running_operator(control_plane, [namespace], name=f"iu-job-{namespace}", env=env):
        world = baseline(cluster, tmp_path)
        world.create_update()
        first = _scan_pod(cluster)
        (container,) = first.spec.containers
        assert container.security_context.run_as_non_root is True
        command = list(container.command)
        assert command[command.index("--data") + 1] == world.data_uri
        assert command[command.index("--baseline") + 1] == "1"
        world.finish_pod(first.metadata.name, _run_scan_pod(first, tmp_path))
        status = world.wait_status(
            "the scan pod's listing", lambda s: (s.get("lastSnapshot") or {}).get("shards") == 2
        )
        assert status["pendingDelta"]["newShards"] == 0
        assert world.runs() == []

        # New data: the next period's scan pod sees it and the run starts.
        write_shard(world.data / "part-00002.parquet", 25, seed=3)
        second = _scan_pod(cluster)
        world.finish_pod(second.metadata.name, _run_scan_pod(second, tmp_path))
        wait_for("the update run", lambda: world.runs() == ["digits-run-1"], timeout=60)
        delta = world.status()["currentRun"]["delta"]
        assert (delta["newShards"], delta["newRows"]) == (1, 25)
        # A scan Job is removed once read: none is left behind.
        batch = client.BatchV1Api(cluster.core.api_client)
        wait_for(
            "scan Jobs removed",
            lambda: (
                not batch.list_namespaced_job(
                    namespace, label_selector="modelops.dev/role=scan"
                ).items
            ),
            timeout=30,
        )


def test_with_data_access_job_a_failed_scan_is_reported_with_the_pods_reason(
    control_plane: Any, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    env = {"MODELOPS_DATA_ACCESS": "job"}
    with running_operator(control_plane, [namespace], name=f"iu-jobf-{namespace}", env=env):
        world = baseline(cluster, tmp_path)
        for shard in world.data.glob("*.parquet"):
            shard.unlink()
        world.data.rmdir()
        world.create_update()
        pod = _scan_pod(cluster)
        message = _run_scan_pod(pod, tmp_path)
        world.finish_pod(pod.metadata.name, message, phase="Failed")
        status = world.wait_status(
            "DataUnavailable",
            lambda s: (condition(s, "Ready") or {}).get("reason") == "DataUnavailable",
        )
        ready = condition(status, "Ready")
        assert ready is not None and str(world.data) in ready["message"], ready
        assert world.runs() == []
