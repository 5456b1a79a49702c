"""The TrainingJob controller against the real control plane, with the operator as a process.

Each test gets a fresh namespace and its own operator process watching only that
namespace, serving the admission webhook under its own configuration name.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops.k8s.security import RUNTIME_UID
from modelops.k8s.versions import VersionAllocator
from modelops.lifecycle.training_report import TrainingResult
from tests.cluster.operator_fixture import OperatorProcess, controlplane, running_operator, wait_for
from tests.cluster.trainingjob_helpers import GPU_TOLERATION, Cluster, condition, manifest

pytestmark = pytest.mark.cluster

GPU_NODES = {n.name for n in controlplane.DEFAULT_NODES if n.gpus}


@pytest.fixture
def operator(control_plane: Any, namespace: str) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, [namespace], name=f"tj-{namespace}") as process:
        yield process


@pytest.fixture
def cluster(k8s: Any, namespace: str) -> Cluster:
    return Cluster(k8s, namespace)


def _result(version: int, **metrics: float) -> TrainingResult:
    return TrainingResult(
        version=version,
        uri=f"file:///var/lib/modelops/models/digits/v{version}",
        metrics=metrics,
        data_snapshot={"uri": "file:///s", "shards": 2, "rows": 1797, "digest": "sha256:00"},
    )


def _running(cluster: Cluster, name: str, workers: int, attempt: int = 0) -> dict[str, Any]:
    expected = {f"{name}-{attempt}-head"} | {f"{name}-{attempt}-worker-{i}" for i in range(workers)}
    cluster.wait_pods(name, expected)
    return cluster.wait_phase(name, "Running")


# -- building and placing the pods --------------------------------------------------------


def test_pods_are_built_as_specified_and_gpu_workers_land_on_gpu_nodes(
    operator: OperatorProcess, cluster: Cluster, namespace: str
) -> None:
    job = cluster.create(
        manifest(
            "gpu-job",
            resources={
                "workers": 2,
                "gpusPerWorker": 2,
                "cpusPerWorker": "4",
                "memoryPerWorker": "8Gi",
                "tolerations": [GPU_TOLERATION],
            },
        )
    )
    uid = job["metadata"]["uid"]
    status = _running(cluster, "gpu-job", 2)

    assert status["workers"] == {"ready": 2, "desired": 2}
    ready = condition(status, "WorkersReady")
    assert ready is not None and ready["status"] == "True"
    assert status["observedGeneration"] == 1
    assert [a["index"] for a in status["attempts"]] == [0]

    for pod in cluster.pods("gpu-job"):
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.uid, owner.controller) == ("TrainingJob", uid, True)
        security = pod.spec.security_context
        assert (security.run_as_non_root, security.run_as_user) == (True, RUNTIME_UID)
        assert security.seccomp_profile.type == "RuntimeDefault"
        for container in pod.spec.containers:
            context = container.security_context
            assert context.read_only_root_filesystem is True
            assert context.allow_privilege_escalation is False
            assert context.capabilities.drop == ["ALL"]
        if pod.metadata.labels["modelops.dev/role"] == "worker":
            resources = pod.spec.containers[0].resources
            assert resources.requests == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
            assert resources.limits == {"memory": "8Gi", "nvidia.com/gpu": "2"}
            assert pod.spec.node_name in GPU_NODES
        else:
            args = pod.spec.containers[0].command
            assert args[args.index("--job-id") + 1] == uid
            assert args[args.index("--version") + 1] == "1"

    children = cluster.children("gpu-job")
    assert children["services"] == {"gpu-job-head"}
    assert children["configmaps"] == {"gpu-job-0-spec"}
    assert children["serviceaccounts"] == children["roles"] == {"gpu-job-driver"}
    assert children["rolebindings"] == {"gpu-job-driver"}
    assert children["secrets"] == {"gpu-job-ray-auth"}
    assert children["networkpolicies"] == {"gpu-job-ray"}
    events = wait_for("events", lambda: (e := cluster.events("gpu-job")) and "Running" in e and e)
    assert events[:2] == ["Provisioning", "Running"]


def test_gang_waits_for_every_worker(
    operator: OperatorProcess, cluster: Cluster, namespace: str
) -> None:
    """A worker that cannot be scheduled keeps the job Provisioning with WorkersReady false."""
    cluster.create(
        manifest(
            "gang",
            resources={"workers": 2, "nodeSelector": {"modelops.dev/pool": "nowhere"}},
        )
    )
    status = wait_for(
        "gang provisioning",
        lambda: (s := cluster.status("gang")).get("phase") == "Provisioning" and s,
    )
    time.sleep(2)  # nothing becomes ready: no node matches
    status = cluster.status("gang")
    assert status["phase"] == "Provisioning"
    assert status["workers"] == {"ready": 0, "desired": 2}
    ready = condition(status, "WorkersReady")
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "WaitingForWorkers"


# -- driving the phases -------------------------------------------------------------------


def test_progress_then_success_records_the_model_version_and_cleans_up_after_ttl(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    cluster.create(manifest("ok", resources={"workers": 1}, ttlSecondsAfterFinished=3))
    _running(cluster, "ok", 1)

    cluster.report_progress("ok-0-head", epoch=12, total=30, val_loss=0.4, val_accuracy=0.9)
    status = wait_for(
        "progress", lambda: (s := cluster.status("ok"))["progress"]["epoch"] == 12 and s
    )
    assert status["progress"]["metrics"] == {"val_loss": 0.4, "val_accuracy": 0.9}
    assert status["progress"]["percent"] == 40
    assert status["attempts"][0]["lastCheckpoint"].endswith(
        "/checkpoints/" + _uid(cluster, "ok") + "/epoch-12"
    )

    cluster.succeed("ok-0-head", _result(1, val_loss=0.3, val_accuracy=0.95))
    status = cluster.wait_phase("ok", "Succeeded")
    version = status["modelVersion"]
    assert (version["name"], version["version"]) == ("digits", 1)
    # The namespace's own folder of the store (the default layout).
    assert version["uri"] == f"file:///var/lib/modelops/models/{cluster.ns}/digits/v1"
    assert version["metrics"] == {"val_loss": 0.3, "val_accuracy": 0.95}
    assert version["dataSnapshot"]["rows"] == 1797
    assert status["mainMetric"] == "val_loss=0.3"
    assert condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    assert status["attempts"][0]["result"] == "Succeeded"
    assert "completionTime" in status

    # Workers go at once; the head (log, result) stays until the TTL.
    wait_for("workers gone", lambda: cluster.pod_names("ok") == {"ok-0-head"})
    wait_for("ttl", lambda: not any(cluster.children("ok").values()), timeout=30)
    assert cluster.status("ok")["phase"] == "Succeeded"
    assert "CleanedUp" in cluster.events("ok")
    events = cluster.events("ok")
    assert [e for e in events if e in ("Provisioning", "Running", "Succeeded")] == [
        "Provisioning",
        "Running",
        "Succeeded",
    ]


def test_a_nan_metric_still_ends_the_job_and_frees_its_workers(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    """Finding 5: JSON has no NaN; the status is written without it and the job ends."""
    cluster.create(manifest("diverged", resources={"workers": 2}))
    _running(cluster, "diverged", 2)
    cluster.report_progress("diverged-0-head", epoch=3, total=30, val_loss=float("nan"))
    cluster.succeed(
        "diverged-0-head", _result(1, val_loss=float("nan"), val_accuracy=float("inf"), mae=0.5)
    )
    status = cluster.wait_phase("diverged", "Succeeded")
    assert status["modelVersion"]["metrics"] == {"mae": 0.5}
    wait_for("workers gone", lambda: cluster.pod_names("diverged") == {"diverged-0-head"})


def _uid(cluster: Cluster, name: str) -> str:
    uid: str = cluster.job(name)["metadata"]["uid"]
    return uid


def test_a_failed_pod_recreates_the_cluster_from_the_checkpoint_then_fails_past_the_limit(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    cluster.create(manifest("flaky", resources={"workers": 2}, backoffLimit=1))
    _running(cluster, "flaky", 2)
    uid = _uid(cluster, "flaky")
    cluster.report_progress("flaky-0-head", epoch=7, total=30, val_loss=0.8)
    wait_for("progress", lambda: cluster.status("flaky")["progress"]["epoch"] == 7)

    cluster.fail("flaky-0-worker-1", message="node lost", reason="Error")
    status = _running(cluster, "flaky", 2, attempt=1)  # old pods gone, new ones up
    first, second = status["attempts"]
    assert first["result"] == "Failed"
    assert first["reason"] == "worker pod flaky-0-worker-1 failed: Error (exit code 1): node lost"
    assert second["lastCheckpoint"].endswith(f"/checkpoints/{uid}/epoch-7")
    head = cluster.pod("flaky-1-head").spec.containers[0].command
    assert head[head.index("--job-id") + 1] == uid  # same id: the runtime resumes
    assert head[head.index("--version") + 1] == "1"  # same version number
    assert cluster.pod_names("flaky") == {"flaky-1-head", "flaky-1-worker-0", "flaky-1-worker-1"}

    cluster.fail("flaky-1-head", message="Traceback ...\nRuntimeError: loss is NaN")
    status = cluster.wait_phase("flaky", "Failed")
    failed = condition(status, "Failed")
    assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
    assert "RuntimeError: loss is NaN" in status["message"]
    assert [a["result"] for a in status["attempts"]] == ["Failed", "Failed"]
    wait_for("workers gone", lambda: cluster.pod_names("flaky") == {"flaky-1-head"})
    events = cluster.events("flaky")
    assert events.count("AttemptFailed") == 2
    # Events of one reconcile may share a timestamp; their order across passes is certain.
    assert events.count("Failed") == 1 and events.index("Failed") > events.index("Retrying")


# -- restarts -----------------------------------------------------------------------------


def test_the_operator_can_be_killed_and_restarted_mid_job(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    cluster.create(manifest("steady", resources={"workers": 2}))
    _running(cluster, "steady", 2)
    before = {p.metadata.name: p.metadata.uid for p in cluster.pods("steady")}
    status_before = cluster.status("steady")

    # Kill it right after a new job was created, while it provisions that job.
    cluster.create(manifest("fresh", resources={"workers": 3}))
    wait_for("fresh job seen", lambda: cluster.status("fresh").get("phase"), timeout=30)
    operator.kill()
    cluster.report_progress("steady-0-head", epoch=4, total=30, val_loss=0.6)
    operator.start()

    _running(cluster, "fresh", 3)
    after = {p.metadata.name: p.metadata.uid for p in cluster.pods("steady")}
    assert after == before  # not one pod recreated
    assert len(cluster.pods("fresh")) == 4  # and none duplicated
    status = wait_for(
        "progress after restart",
        lambda: (s := cluster.status("steady"))["progress"]["epoch"] == 4 and s,
    )
    assert status["phase"] == "Running"
    (attempt,) = status["attempts"]  # the restart started no new attempt
    assert attempt == {**status_before["attempts"][0], "lastCheckpoint": attempt["lastCheckpoint"]}
    assert attempt["lastCheckpoint"].endswith("/epoch-4")
    assert status["startTime"] == status_before["startTime"]

    cluster.succeed("steady-0-head", _result(1))
    cluster.succeed("fresh-0-head", _result(2))
    versions = {
        name: cluster.wait_phase(name, "Succeeded")["modelVersion"]["version"]
        for name in ("steady", "fresh")
    }
    assert versions == {"steady": 1, "fresh": 2}
    assert cluster.events("steady").count("Running") == 1  # no transition repeated


# -- versions -----------------------------------------------------------------------------


def test_concurrent_jobs_of_one_model_get_distinct_versions(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    names = [f"concurrent-{i}" for i in range(6)]
    threads = [
        threading.Thread(target=cluster.create, args=(manifest(n, resources={"workers": 1}),))
        for n in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = {}
    for name in names:
        pods = cluster.wait_pods(name, {f"{name}-0-head", f"{name}-0-worker-0"})
        head = next(p for p in pods if p.metadata.name.endswith("head"))
        versions[name] = int(head.metadata.annotations["modelops.dev/model-version"])
    assert sorted(versions.values()) == list(range(1, 7))
    book = cluster.version_book("digits")
    assert book["next"] == "7"
    recorded = {entry["job"]: entry["version"] for entry in json.loads(book["jobs"]).values()}
    assert recorded == versions


def test_version_allocation_is_safe_across_processes(control_plane: Any, namespace: str) -> None:
    """Two allocators with their own connections (as two operators would be) race for one book."""
    from modelops.k8s.kube import Kube

    kubes = [Kube.connect(str(control_plane.kubeconfig)) for _ in range(2)]
    allocators = [VersionAllocator(kube) for kube in kubes]
    got: dict[str, int] = {}
    lock = threading.Lock()

    def allocate(allocator: VersionAllocator, prefix: str) -> None:
        for i in range(15):
            version = allocator.allocate(namespace, "shared", f"{prefix}-{i}", f"job-{prefix}-{i}")
            with lock:
                got[f"{prefix}-{i}"] = version

    threads = [
        threading.Thread(target=allocate, args=(allocators[i % 2], f"p{i}")) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got.values()) == list(range(1, 61))
    # Asking again (a restarted operator) returns the recorded numbers.
    fresh = VersionAllocator(kubes[0])
    assert all(fresh.allocate(namespace, "shared", uid, "x") == v for uid, v in got.items())
    for kube in kubes:
        kube.close()


def test_forgetting_a_job_of_a_model_without_a_book_creates_none(
    control_plane: Any, namespace: str, k8s: Any
) -> None:
    """Finding 6: `forget` on a missing book writes nothing (no 403 while terminating)."""
    from modelops.k8s.kube import Kube

    kube = Kube.connect(str(control_plane.kubeconfig))
    try:
        VersionAllocator(kube).forget(namespace, "never-trained", "uid-1")
        with pytest.raises(ApiException) as missing:
            client.CoreV1Api(k8s).read_namespaced_config_map(
                "modelops-versions-never-trained", namespace
            )
        assert missing.value.status == 404
        # With a book, forgetting keeps the counter (the number stays spent).
        allocator = VersionAllocator(kube)
        assert allocator.allocate(namespace, "kept", "uid-2", "job-2") == 1
        allocator.forget(namespace, "kept", "uid-2")
        data = Cluster(k8s, namespace).version_book("kept")
        assert data["next"] == "2" and json.loads(data["jobs"]) == {}
    finally:
        kube.close()


# -- isolation ----------------------------------------------------------------------------


def test_ray_runs_with_a_per_job_token_and_only_the_jobs_pods_may_connect(
    operator: OperatorProcess, cluster: Cluster, namespace: str
) -> None:
    """Finding 2: each job's Ray cluster needs its own token; a policy fences its pods."""
    cluster.create(manifest("fenced", resources={"workers": 1}))
    cluster.create(manifest("other", model="other", resources={"workers": 1}))
    _running(cluster, "fenced", 1)
    _running(cluster, "other", 1)
    uid = _uid(cluster, "fenced")

    secret = cluster.core.read_namespaced_secret("fenced-ray-auth", namespace)
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("TrainingJob", uid, True)
    token = base64.b64decode(secret.data["auth_token"]).decode()
    assert len(token) >= 32
    other = cluster.core.read_namespaced_secret("other-ray-auth", namespace)
    assert base64.b64decode(other.data["auth_token"]).decode() != token

    for pod in cluster.pods("fenced"):
        for container in pod.spec.containers + (pod.spec.init_containers or []):
            env = {e.name: e for e in container.env}
            assert env["RAY_AUTH_MODE"].value == "token"
            ref = env["RAY_AUTH_TOKEN"].value_from.secret_key_ref
            assert (ref.name, ref.key) == ("fenced-ray-auth", "auth_token")

    networking = client.NetworkingV1Api(cluster.core.api_client)
    policy = networking.read_namespaced_network_policy("fenced-ray", namespace)
    own = {"modelops.dev/trainingjob": "fenced"}
    assert policy.spec.pod_selector.match_labels == own
    assert policy.spec.policy_types == ["Ingress"]
    (rule,) = policy.spec.ingress
    assert [peer.pod_selector.match_labels for peer in rule._from] == [own]
    assert all(peer.namespace_selector is None for peer in rule._from)

    # The token is nowhere the job's readers look: status, events, the operator's log.
    assert token not in json.dumps(cluster.job("fenced"))
    assert token not in operator.log_path.read_text()

    # A retry keeps the job's token (the Secret is created once, immutable).
    cluster.fail("fenced-0-worker-0")
    _running(cluster, "fenced", 1, attempt=1)
    again = cluster.core.read_namespaced_secret("fenced-ray-auth", namespace)
    assert base64.b64decode(again.data["auth_token"]).decode() == token


# -- deletion -----------------------------------------------------------------------------


def test_deleting_a_job_removes_its_children_and_keeps_its_version_number(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    cluster.create(manifest("doomed", resources={"workers": 2}))
    _running(cluster, "doomed", 2)
    uid = _uid(cluster, "doomed")
    assert uid in json.loads(cluster.version_book("digits")["jobs"])

    cluster.delete_job("doomed")

    def gone() -> bool:
        try:
            cluster.job("doomed")
        except ApiException as error:
            return error.status == 404
        return False

    wait_for("job deleted", gone, timeout=60)
    wait_for("children deleted", lambda: not any(cluster.children("doomed").values()), timeout=60)
    book = cluster.version_book("digits")
    assert uid not in json.loads(book["jobs"])
    assert book["next"] == "2"  # the number stays spent


# -- admission ----------------------------------------------------------------------------


def test_an_invalid_spec_is_rejected_with_the_field_named(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    with pytest.raises(ApiException) as raised:
        cluster.create(manifest("bad", resources={"workers": 0}))
    assert raised.value.status == 422
    assert "spec.resources.workers" in str(raised.value.body)

    # Immutable fields: the CRD's transition rules answer first (the webhook says the same,
    # see the next test), so the rejection holds even while the operator is down.
    cluster.create(manifest("immutable", resources={"workers": 1}))
    for patch, field in (
        ({"output": {"modelName": "renamed"}}, "spec.output"),
        ({"model": {"hiddenLayers": [8]}}, "spec.model"),
        ({"warmStart": {"version": 1}}, "spec.warmStart"),
    ):
        with pytest.raises(ApiException) as raised:
            cluster.patch_job("immutable", {"spec": patch})
        assert raised.value.status == 422
        message = json.loads(raised.value.body)["message"]
        assert f"{field}: Invalid value" in message and "field is immutable" in message

    # A mutable change is admitted, with a warning that it applies to the next attempt.
    done = operator.control_plane.kubectl(
        "patch", "tj", "immutable", "-n", cluster.ns, "--type=merge",
        "-p", json.dumps({"spec": {"resources": {"workers": 2}}}),
    )  # fmt: skip
    assert "applies to the next attempt" in done.stderr


def test_the_tenancy_policy_refuses_images_priority_classes_and_tolerations(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    """Finding 8: the webhook (with the operator's policy) names the refused field."""
    for resources, field in (
        ({"image": "evil.example/miner:latest"}, "spec.resources.image"),
        ({"priorityClassName": "system-node-critical"}, "spec.resources.priorityClassName"),
        ({"tolerations": [{"operator": "Exists"}]}, "spec.resources.tolerations[0]"),
    ):
        with pytest.raises(ApiException) as raised:
            cluster.create(manifest("greedy", resources=resources))
        assert raised.value.status == 422, resources
        assert f"{field}: " in json.loads(raised.value.body)["message"]
    assert cluster.jobs() == []


def test_without_the_webhook_the_reconciler_applies_the_same_policy(
    control_plane: Any, cluster: Cluster, namespace: str
) -> None:
    """Finding 8: an object that got past admission still never gets its pods."""
    with running_operator(control_plane, [namespace], name=f"nowh-{namespace}", webhook=False):
        cluster.create(manifest("sneaky", resources={"priorityClassName": "system-node-critical"}))
        status = cluster.wait_phase("sneaky", "Failed")
        assert "spec.resources.priorityClassName" in status["message"]
        assert "reserved for cluster components" in status["message"]
        assert cluster.pods("sneaky") == []


def test_the_webhook_answers_admission_reviews_itself(
    operator: OperatorProcess, cluster: Cluster
) -> None:
    """The schema rejects most bad specs before any webhook; ask the webhook directly."""
    bad = manifest("direct", resources={"workers": 0})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": "modelops.dev", "version": "v1alpha1", "kind": "TrainingJob"},
            "resource": {
                "group": "modelops.dev",
                "version": "v1alpha1",
                "resource": "trainingjobs",
            },
            "name": "direct",
            "namespace": cluster.ns,
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {**bad, "metadata": {"name": "direct", "namespace": cluster.ns}},
            "oldObject": None,
            "dryRun": False,
        },
    }
    context = ssl.create_default_context(cafile=str(operator.cert_dir / "tls.crt"))
    request = urllib.request.Request(
        f"https://127.0.0.1:{operator.webhook_port}/validate-trainingjob",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer = json.loads(response.read())["response"]
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 422
    assert "spec.resources.workers" in answer["status"]["message"]

    # An UPDATE that changes an immutable field, as the API server would send it.
    old = manifest("direct", resources={"workers": 1})
    new = manifest("direct", model="renamed", resources={"workers": 1})
    review["request"]["operation"] = "UPDATE"
    review["request"]["object"] = {**new, "metadata": {"name": "direct", "namespace": cluster.ns}}
    review["request"]["oldObject"] = {
        **old,
        "metadata": {"name": "direct", "namespace": cluster.ns},
    }
    request = urllib.request.Request(
        request.full_url,
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        answer = json.loads(response.read())["response"]
    assert answer["allowed"] is False
    assert "spec.output: field is immutable" in answer["status"]["message"]


# -- metrics ------------------------------------------------------------------------------


def test_operator_metrics_count_reconciles(operator: OperatorProcess, cluster: Cluster) -> None:
    cluster.create(manifest("measured", resources={"workers": 1}))
    _running(cluster, "measured", 1)
    labels = {"resource": "trainingjobs", "handler": "reconcile"}
    assert (operator.metric("modelops_reconcile_total", **labels, result="success") or 0) >= 2
    assert (operator.metric("modelops_reconcile_duration_seconds_count", **labels) or 0) >= 2
    assert operator.metric("modelops_reconcile_queue", resource="trainingjobs") == 0
    assert operator.metric("modelops_managed_objects", resource="trainingjobs") == 1
    assert (operator.metric("modelops_api_writes_total", verb="create", kind="Pod") or 0) == 2
    assert operator.metric("process_resident_memory_bytes") is not None
