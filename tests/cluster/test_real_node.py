"""The Kubernetes path on a real node: real containers, real Ray, real HTTP, nothing patched.

The chart is installed with `helm install`, the examples are applied with `kubectl apply`,
and everything that follows is done by the operator and the pods it starts on the session's
real node (kubelet + containerd + runc, tests/controlplane/node.py), with the images built
from the project's Dockerfiles. No test writes a field that a pod would write.

The operator's and the tenant's namespaces enforce the restricted Pod Security Standard, so
every pod must actually start under it. Namespace annotations (PodNodeSelector,
PodTolerationRestriction) send their pods to the real node; the KWOK nodes of the other
tests never get them, and those tests' pods never land here (the node is tainted).

Resources are scaled to the machine: this node has the host's CPUs (2 in CI), so the
examples' CPU requests are lowered on the way in (the only change made to them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.cluster.conftest import load_controlplane

# The first test also waits for the node, the images and the chart (minutes when cold).
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelops"
EXAMPLES = ROOT / "examples" / "digits"
RELEASE = "modelops-node"
SYSTEM_NAMESPACE = "modelops-node-system"
STORE_CLAIM = "modelops-store"
NODE_NAME = "modelops-node-0"
# A training shard kept out of the first version; it lands later as new data.
HELD_BACK = "part-00003.parquet"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
T = TypeVar("T")

controlplane = load_controlplane()


def poll(what: str, fn: Callable[[], T | None], timeout: float, every: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Platform:
    """The installed chart, the tenant's namespace and the store, as the tests see them."""

    def __init__(self, control_plane: Any, node: Any) -> None:
        self.cp = control_plane
        self.node = node
        self.token = uuid.uuid4().hex[:6]
        self.tenant = f"tenant-{self.token}"
        self.store = Path(tempfile.mkdtemp(prefix="modelops-node-store-"))
        self.pv = f"modelops-store-{self.token}"

    # -- kubectl ---------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = self.cp.kubectl(*args, input=input, check=check)
        return str(result.stdout)

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return out

    def apply(self, manifest: dict[str, Any], namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", input=yaml.safe_dump(manifest))

    def namespace(self, name: str) -> None:
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {**RESTRICTED, "modelops.dev/real-node-test": self.token},
                    "annotations": self.node_annotations(),
                },
            }
        )

    def node_annotations(self) -> dict[str, str]:
        module = sys.modules["modelops_controlplane_node"]
        annotations: dict[str, str] = module.namespace_annotations()
        return annotations

    def tenant_pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", self.tenant, "-l", selector)["items"]
        return items

    def logs(self, pod: str, container: str | None = None) -> str:
        args = ["logs", "-n", self.tenant, pod, "--tail", "60"]
        if container:
            args += ["-c", container]
        return self.kubectl(*args, check=False)

    def diagnostics(self) -> str:
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False)
        events = self.kubectl(
            "get", "events", "-n", self.tenant, "--sort-by=.lastTimestamp", check=False
        )
        failed = []
        for pod in self.get("pods", "-n", self.tenant)["items"]:
            statuses = pod["status"].get("containerStatuses") or []
            if any((s.get("state") or {}).get("terminated", {}).get("exitCode") for s in statuses):
                name = pod["metadata"]["name"]
                failed.append(f"--- logs of {name} ---\n{self.logs(name)[-3000:]}")
        logs = "\n".join(failed)
        return f"{pods}\n{events[-4000:]}\n{logs}\n{self.cp.node_log_tails(20)}"

    # -- the examples, scaled to this node -------------------------------------------------

    def example(self, name: str) -> dict[str, Any]:
        manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
        return manifest


def _write_digits(store: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modelops_runtime",
            "datasets",
            "digits",
            str(store / "data" / "digits"),
        ],
        check=True,
        capture_output=True,
    )
    (store / "incoming").mkdir()
    shutil.move(store / "data" / "digits" / "train" / HELD_BACK, store / "incoming" / HELD_BACK)
    (store / "models").mkdir(exist_ok=True)
    # The pods run as uid 10001; the folder is the hostPath behind the store PVC.
    for path in [store, *store.rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)


@pytest.fixture(scope="module")
def platform(control_plane: Any, real_node: Any) -> Iterator[Platform]:
    p = Platform(control_plane, real_node)
    _write_digits(p.store)
    p.namespace(SYSTEM_NAMESPACE)
    p.namespace(p.tenant)
    p.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": p.pv},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "modelops-store",
                "hostPath": {"path": str(p.store), "type": "Directory"},
            },
        }
    )
    p.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": STORE_CLAIM, "namespace": p.tenant},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "modelops-store",
                "volumeName": p.pv,
                "resources": {"requests": {"storage": "10Gi"}},
            },
        }
    )
    selector = {"matchLabels": {"modelops.dev/real-node-test": p.token}}
    values = {
        "replicaCount": 1,
        "watchNamespaces": [p.tenant],
        "store": {"persistentVolumeClaim": STORE_CLAIM, "uri": "file:///var/lib/modelops/models"},
        "rayHead": {"cpu": "100m", "memory": "3Gi"},
        "webhook": {"namespaceSelector": selector},
    }
    args = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    try:
        control_plane.helm(
            "install", RELEASE, str(CHART), "--namespace", SYSTEM_NAMESPACE,
            "--wait", "--timeout", "5m", *args,
        )  # fmt: skip
    except RuntimeError as exc:
        raise AssertionError(f"helm install failed: {exc}\n{p.diagnostics()}") from exc
    # Ready means the webhook's port is open in the pod; its Service reaches the pod once
    # kube-proxy has the new endpoint, a moment later on a node just started. Until then
    # the API server refuses every TrainingJob (the webhook fails closed): wait for it.
    probe = yaml.safe_dump(p.example("trainingjob.yaml"))

    refused: list[str] = []

    def admits() -> bool:
        dry_run = control_plane.kubectl(
            "apply", "--dry-run=server", "-n", p.tenant, "-f", "-", input=probe, check=False
        )
        refused.append(dry_run.stderr)
        return dry_run.returncode == 0

    try:
        poll("the webhook to admit a TrainingJob", admits, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {refused[-1]}\n{p.diagnostics()}") from exc
    try:
        yield p
    finally:
        # The resources first, while the operator still runs to remove its finalizers.
        control_plane.kubectl(
            "delete", "-n", p.tenant, "trainingjobs,modeldeployments,incrementalupdates", "--all",
            "--wait=true", "--timeout=180s", check=False,
        )  # fmt: skip
        control_plane.helm(
            "uninstall", RELEASE, "--namespace", SYSTEM_NAMESPACE, "--wait", check=False
        )
        for ns in (p.tenant, SYSTEM_NAMESPACE):
            control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        control_plane.kubectl("delete", "pv", p.pv, "--wait=false", check=False)
        shutil.rmtree(p.store, ignore_errors=True)


# -- the tests ----------------------------------------------------------------------------------


def test_the_operator_runs_in_a_real_pod_under_restricted(platform: Platform) -> None:
    pods = platform.get(
        "pods", "-n", SYSTEM_NAMESPACE, "-l", "app.kubernetes.io/component=operator"
    )
    assert len(pods["items"]) == 1, platform.diagnostics()
    pod = pods["items"][0]
    assert pod["spec"]["nodeName"] == NODE_NAME
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["started"], status
    # A real container: the kubelet reports the image it ran and the container's id.
    assert status["containerID"].startswith("containerd://"), status
    assert "modelops-operator" in status["image"]
    node = platform.get("node", NODE_NAME)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_training_job_trains_on_real_ray_pods(platform: Platform) -> None:
    job = platform.example("trainingjob.yaml")
    job["spec"]["resources"].update({"cpusPerWorker": "500m", "memoryPerWorker": "2Gi"})
    platform.apply(job, platform.tenant)
    name = job["metadata"]["name"]
    seen_epochs: set[int] = set()
    seen_pods: dict[str, dict[str, Any]] = {}

    def finished() -> dict[str, Any] | None:
        tj = platform.get("trainingjob", name, "-n", platform.tenant)
        status = tj.get("status") or {}
        epoch = (status.get("progress") or {}).get("epoch")
        if epoch:
            seen_epochs.add(int(epoch))
        for pod in platform.tenant_pods(f"modelops.dev/trainingjob={name}"):
            if pod["status"].get("phase") == "Running":
                seen_pods[pod["metadata"]["name"]] = pod
        if status.get("phase") == "Failed":
            raise AssertionError(f"the job failed: {status}\n{platform.diagnostics()}")
        return tj if status.get("phase") == "Succeeded" else None

    try:
        tj = poll(f"TrainingJob {name} Succeeded", finished, timeout=900)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.diagnostics()}") from exc
    status = tj["status"]
    # Real Ray pods ran: a head and both workers, on the real node, with containerd ids.
    roles = sorted(p["metadata"]["labels"].get("modelops.dev/role", "") for p in seen_pods.values())
    assert roles.count("worker") == 2 and roles.count("head") == 1, roles
    for pod in seen_pods.values():
        assert pod["spec"]["nodeName"] == NODE_NAME
    # Progress came from the driver while it trained, not only at the end.
    assert seen_epochs, "no progress was reported while training"
    version = status["modelVersion"]
    assert version["version"] == 1
    metrics = version.get("metrics") or {}
    assert metrics.get("accuracy", 0) > 0.85, version
    # Each namespace's versions have their own folder of the store (the default layout).
    stored = platform.store / "models" / platform.tenant / "digits" / "v1"
    files = {p.name for p in stored.iterdir()} if stored.exists() else set()
    assert "model.safetensors" in files and not any(
        f.endswith(".pt") or f.endswith(".pkl") for f in files
    ), files


def test_model_deployment_serves_the_version_through_its_service(platform: Platform) -> None:
    md = platform.example("modeldeployment.yaml")
    md["spec"]["resources"] = {"cpu": "200m", "memory": "1Gi"}
    platform.apply(md, platform.tenant)
    name = md["metadata"]["name"]

    def available() -> dict[str, Any] | None:
        obj = platform.get("modeldeployment", name, "-n", platform.tenant)
        status = obj.get("status") or {}
        return (
            obj if status.get("phase") == "Available" and status.get("activeVersion") == 1 else None
        )

    try:
        poll(f"ModelDeployment {name} Available", available, timeout=600)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.diagnostics()}") from exc
    service = platform.get("service", name, "-n", platform.tenant)
    cluster_ip = service["spec"]["clusterIP"]
    port = service["spec"]["ports"][0]["port"]
    base = f"http://{cluster_ip}:{port}/v2/models/digits"
    with urllib.request.urlopen(base, timeout=10) as resp:
        metadata = json.load(resp)
    input_name = metadata["inputs"][0]["name"]
    features, labels = _holdout(platform.store / "data" / "digits" / "holdout")
    # One request carries at most maxBatchSize rows (32 by default), as Triton's max_batch_size.
    limit = int((md["spec"].get("batching") or {}).get("maxBatchSize", 32))
    assert len(labels) > limit, len(labels)
    predicted: list[int] = []
    for start in range(0, len(labels), limit):
        answer = _infer(base, input_name, features[start : start + limit])
        predicted += _class_indices(answer)
    with pytest.raises(urllib.error.HTTPError) as oversize:
        _infer(base, input_name, features[: limit + 1])
    assert oversize.value.code == 413, oversize.value
    assert "maxBatchSize" in oversize.value.read().decode()
    accuracy = sum(int(p == t) for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy > 0.85, accuracy
    pods = platform.tenant_pods(f"modelops.dev/modeldeployment={name}")
    assert pods and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)


def test_batch_prediction_runs_as_a_real_job(platform: Platform) -> None:
    """The same ModelDeployment predicts over the holdout shards with a Job on the node."""
    md = platform.example("modeldeployment.yaml")
    md["spec"]["resources"] = {"cpu": "200m", "memory": "1Gi"}
    md["spec"]["batchPrediction"] = {
        "inputUri": "file:///var/lib/modelops/data/digits/holdout",
        "outputUri": "file:///var/lib/modelops/predictions/digits",
    }
    platform.apply(md, platform.tenant)
    name = md["metadata"]["name"]

    def done() -> dict[str, Any] | None:
        status = platform.get("modeldeployment", name, "-n", platform.tenant).get("status") or {}
        batch = status.get("batchPrediction") or {}
        if batch.get("phase") == "Failed":
            raise AssertionError(f"batch prediction failed: {batch}\n{platform.diagnostics()}")
        return batch if batch.get("phase") == "Succeeded" else None

    try:
        batch = poll("batch prediction Succeeded", done, timeout=600)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.diagnostics()}") from exc
    inputs = sorted((platform.store / "data" / "digits" / "holdout").glob("*.parquet"))
    written = sorted((platform.store / "predictions" / "digits").rglob("*.parquet"))
    assert inputs and len(written) == len(inputs), (inputs, written)
    assert batch["version"] == 1, batch
    # The counts come from the pod's termination message: the operator has no store mount.
    assert batch.get("shardsDone") == batch.get("shardsTotal") == len(inputs), batch
    jobs = platform.get("jobs", "-n", platform.tenant)["items"]
    assert any(j["status"].get("succeeded") == 1 for j in jobs), jobs


def test_a_second_version_is_canaried_and_promoted_and_a_bad_one_rolled_back(
    platform: Platform,
) -> None:
    """Two more versions of the served model: a good one goes live, a bad one is refused.

    Real traffic with ground-truth feedback flows through the Service the whole time; the
    gate decides from what the serving pods measured.
    """
    name = "digits"
    platform.kubectl(
        "patch", "modeldeployment", name, "-n", platform.tenant, "--type=merge", "-p",
        json.dumps({"spec": {
            "batchPrediction": None,
            "rollout": {
                "strategy": "canary",
                "steps": [{"weight": 50, "pauseSeconds": 10}],
                "analysis": {
                    "maxErrorRate": 0.05, "maxP95Ms": 5000, "minAccuracy": 0.8,
                    "minRequests": 30,
                },
            },
        }}),
    )  # fmt: skip
    base = int(
        platform.get("modeldeployment", name, "-n", platform.tenant)["status"]["activeVersion"]
    )
    good, bad = base + 1, base + 2
    with Traffic(platform, name, rps=10) as traffic:
        _train_version(platform, "digits-v2", epochs=8)
        promoted = _wait_deployment(
            platform, name, f"version {good} promoted",
            lambda s: s.get("activeVersion") == good and not s.get("candidateVersion"),
        )  # fmt: skip
        assert any(p.get("version") == good for p in promoted.get("promotions") or []), promoted
        assert traffic.versions.get(good, 0) > 0, traffic.versions  # the canary served traffic
        _train_version(platform, "digits-bad", epochs=1, learning_rate=1e-6)
        rolled = _wait_deployment(
            platform, name, f"version {bad} rolled back",
            lambda s: any(r.get("version") == bad for r in s.get("rollbacks") or []),
        )  # fmt: skip
        reason = next(r["reason"] for r in rolled["rollbacks"] if r["version"] == bad)
        assert "accuracy" in reason, reason
        assert traffic.versions.get(bad, 0) > 0, traffic.versions
        # After the rollback every request is answered by the good version again.
        traffic.versions.clear()
        time.sleep(5)
        assert set(traffic.versions) == {good}, traffic.versions
    assert traffic.failures == [], traffic.failures[:5]
    status = platform.get("modeldeployment", name, "-n", platform.tenant)["status"]
    assert status["activeVersion"] == good, status


def test_load_scales_the_replicas_up_and_back_down(platform: Platform) -> None:
    name = "digits"
    platform.kubectl(
        "patch", "modeldeployment", name, "-n", platform.tenant, "--type=merge", "-p",
        json.dumps({"spec": {"autoscaling": {
            "minReplicas": 1, "maxReplicas": 3, "metric": "rps", "target": 4,
            "intervalSeconds": 2,
            "scaleUp": {"stabilizationSeconds": 0, "maxStepReplicas": 2, "periodSeconds": 5},
            "scaleDown": {"stabilizationSeconds": 10, "maxStepReplicas": 2, "periodSeconds": 5},
        }}}),
    )  # fmt: skip
    with Traffic(platform, name, rps=16, feedback=False) as traffic:
        scaled = _wait_deployment(
            platform, name, "scale-up under load",
            lambda s: s.get("desiredReplicas", 0) >= 2 and s.get("readyReplicas", 0) >= 2,
        )  # fmt: skip
    assert traffic.failures == [], traffic.failures[:5]
    decision = scaled.get("lastScale") or {}
    assert decision.get("toReplicas", 0) >= 2 and decision.get("load", 0) > 4, decision
    pods = platform.tenant_pods(f"modelops.dev/modeldeployment={name}")
    assert len([p for p in pods if p["status"].get("phase") == "Running"]) >= 2, pods
    _wait_deployment(
        platform, name, "scale-down when idle",
        lambda s: s.get("desiredReplicas") == 1 and s.get("replicas") == 1,
    )  # fmt: skip


def test_new_shards_promote_a_fine_tuned_version(platform: Platform) -> None:
    """The update looks at the data from scan pods in the tenant's namespace (the operator
    has no store mount), fine-tunes the serving version on a landed shard, evaluates both
    versions in a Job and promotes the candidate."""
    update = platform.example("incrementalupdate.yaml")
    update["spec"]["detect"]["intervalSeconds"] = 10
    update["spec"]["strategy"]["epochs"] = 3
    # The holdout has 360 rows: one row is 0.003 of accuracy. The gate's arithmetic is
    # covered by unit tests; here a fine-tune must not lose a handful of rows.
    update["spec"]["promotion"]["maxRegression"] = 0.03
    platform.apply(update, platform.tenant)
    name = update["metadata"]["name"]

    def status() -> dict[str, Any]:
        got: dict[str, Any] = (
            platform.get("incrementalupdate", name, "-n", platform.tenant).get("status") or {}
        )
        return got

    def watching() -> dict[str, Any] | None:
        now = status()
        return now if (now.get("lastSnapshot") or {}).get("shards") == 3 else None

    try:
        first = poll("the first look at the data", watching, timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status()}\n{platform.diagnostics()}") from exc
    assert first.get("runs", 0) == 0, first  # nothing new since the serving version
    train = platform.store / "data" / "digits" / "train"
    shutil.copy(platform.store / "incoming" / HELD_BACK, train / HELD_BACK)
    os.chmod(train / HELD_BACK, 0o666)

    def decided() -> dict[str, Any] | None:
        now = status()
        history = now.get("history") or []
        return history[-1] if history else None

    try:
        record = poll("the update run's decision", decided, timeout=1200, every=5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {status()}\n{platform.diagnostics()}") from exc
    assert record["decision"] == "Promoted", record
    assert record["delta"]["newShards"] == 1 and record["delta"]["newRows"] > 0, record
    final = status()
    assert final["promotedVersion"] == record["version"], final
    assert final["lastSnapshot"]["shards"] == 4, final
    # Each look was a pod of its own, removed once read.
    jobs = platform.get("jobs", "-n", platform.tenant, "-l", "modelops.dev/role=scan")["items"]
    assert len(jobs) <= 1, [j["metadata"]["name"] for j in jobs]
    stored = platform.store / "models" / platform.tenant / "digits" / f"v{record['version']}"
    assert (stored / "model.safetensors").exists(), list(stored.iterdir())


def test_a_killed_worker_is_replaced_and_training_resumes_from_the_checkpoint(
    platform: Platform,
) -> None:
    job = platform.example("trainingjob.yaml")
    job["metadata"]["name"] = "digits-resume"
    job["spec"]["output"]["modelName"] = "digits-resume"
    # Long enough (about 0.6 s an epoch here) that the kill lands well before the end:
    # progress reaches the status every few seconds, and Ray notices a lost node in seconds.
    job["spec"]["training"]["epochs"] = 150
    job["spec"]["training"].pop("earlyStopping", None)
    job["spec"]["resources"].update({"cpusPerWorker": "500m", "memoryPerWorker": "2Gi"})
    platform.apply(job, platform.tenant)
    name = job["metadata"]["name"]

    # The checkpoints in the store (a folder of this machine) show the epochs as they end;
    # the status shows them only as often as the operator copies progress, which on a fast
    # run can be late enough for the kill to land after the last epoch.
    models = platform.store / "models" / platform.tenant / "digits-resume"

    def training() -> int | None:
        done = [int(p.parent.name.removeprefix("epoch-")) for p in models.rglob("epoch-*/state.json")]
        return max(done) if done and max(done) >= 3 else None

    try:
        poll("three epochs of the first attempt", training, timeout=900, every=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.diagnostics()}") from exc
    # Every worker pod goes: Ray may have packed both training workers into one of them.
    workers = platform.tenant_pods(f"modelops.dev/trainingjob={name},modelops.dev/role=worker")
    victims = [w["metadata"]["name"] for w in workers]
    platform.kubectl(
        "delete", "pod", *victims, "-n", platform.tenant, "--grace-period=0", "--force"
    )

    def finished() -> dict[str, Any] | None:
        status = platform.get("trainingjob", name, "-n", platform.tenant).get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"the job failed: {status}")
        return status if status.get("phase") == "Succeeded" else None

    try:
        status = poll(f"TrainingJob {name} Succeeded after the retry", finished, timeout=900)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{platform.diagnostics()}") from exc
    # The lost worker is replaced (its pod is recreated, as KubeRay does) and Ray Train
    # restarts the worker group from the newest checkpoint; when that is not possible the
    # attempt fails and the next one resumes. Either way the run continues from a checkpoint.
    attempts = status["attempts"]
    assert attempts[-1]["result"] == "Succeeded" and attempts[-1].get("lastCheckpoint"), attempts
    record = json.loads(
        (
            platform.store / "models" / platform.tenant / "digits-resume" / "v1" / "training.json"
        ).read_text()
    )
    history = record["epochs"]
    assert record["attempts"] >= 2, record
    assert len({h["attempt"] for h in history}) >= 2, history
    numbers = [h["epoch"] for h in history]
    assert numbers == sorted(set(numbers)) and numbers[0] in (0, 1), numbers
    platform.kubectl(
        "delete", "-n", platform.tenant, "trainingjob", name, "--wait=true", "--timeout=120s"
    )


def test_a_job_and_a_deployment_use_s3_with_the_tenants_secret(platform: Platform) -> None:
    """Data, checkpoints and versions on a real S3 server (SeaweedFS on the node's address),
    reached with the credentials of the Secret in the tenant's namespace: the training pods
    and the serving pods take it, and the secret key shows up in no status and no log."""
    from tests.s3_server import SECRET_KEY, S3Server

    node_ip = sys.modules["modelops_controlplane_node"].NODE_IP
    server = S3Server(
        Path(tempfile.mkdtemp(prefix="modelops-node-s3-")), ["modelops-node"], ip=node_ip
    )
    server.start()
    try:
        client = server.client()
        data = platform.store / "data" / "digits"
        for split in ("train", "holdout"):
            for shard in sorted((data / split).glob("*.parquet")):
                client.put_object(
                    Bucket="modelops-node",
                    Key=f"data/digits/{split}/{shard.name}",
                    Body=shard.read_bytes(),
                )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "modelops-store-credentials"},
            "stringData": server.env(),
        }
        platform.apply(secret, platform.tenant)
        job = platform.example("trainingjob.yaml")
        job["metadata"]["name"] = "digits-s3"
        job["spec"]["data"]["uri"] = "s3://modelops-node/data/digits/train"
        job["spec"]["data"]["holdoutUri"] = "s3://modelops-node/data/digits/holdout"
        job["spec"]["output"] = {"modelName": "digits-s3", "storeUri": "s3://modelops-node/models"}
        job["spec"]["training"]["epochs"] = 10
        job["spec"]["training"].pop("earlyStopping", None)
        job["spec"]["resources"].update(
            {"workers": 1, "cpusPerWorker": "500m", "memoryPerWorker": "2Gi"}
        )
        platform.apply(job, platform.tenant)

        status = _wait_succeeded(platform, "digits-s3", extra=server.log)
        assert (status["modelVersion"].get("metrics") or {}).get("accuracy", 0) > 0.8, status
        # The version is in the bucket, under the namespace's own prefix, whole.
        prefix = f"models/{platform.tenant}/digits-s3/v1/"
        listed = client.list_objects_v2(Bucket="modelops-node", Prefix=prefix)
        names = {o["Key"][len(prefix) :] for o in listed.get("Contents", [])}
        assert {"model.safetensors", "model.json"} <= names, names
        assert not (platform.store / "models" / platform.tenant / "digits-s3").exists()

        md = platform.example("modeldeployment.yaml")
        md["metadata"]["name"] = "digits-s3"
        md["spec"]["model"].update({"name": "digits-s3", "storeUri": "s3://modelops-node/models"})
        md["spec"]["resources"] = {"cpu": "200m", "memory": "1Gi"}
        md["spec"].pop("autoscaling", None)
        platform.apply(md, platform.tenant)
        _wait_deployment(
            platform, "digits-s3", "the S3 version served",
            lambda s: s.get("phase") == "Available" and s.get("activeVersion") == 1,
        )  # fmt: skip
        service = platform.get("service", "digits-s3", "-n", platform.tenant)
        base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v2/models/digits-s3"
        with urllib.request.urlopen(base, timeout=10) as resp:
            input_name = json.load(resp)["inputs"][0]["name"]
        features, labels = _holdout(data / "holdout")
        predicted = _class_indices(_infer(base, input_name, features[:32]))
        assert sum(int(p == t) for p, t in zip(predicted, labels[:32], strict=True)) >= 26, (
            predicted
        )

        # The secret key is in no status and no log of the tenant's pods or the operator.
        seen = platform.kubectl(
            "get", "trainingjob,modeldeployment", "-n", platform.tenant, "-o", "yaml"
        )
        assert SECRET_KEY not in seen
        pods = platform.tenant_pods("app.kubernetes.io/managed-by=modelops")
        for pod in pods:
            for container in pod["spec"]["containers"]:
                assert SECRET_KEY not in platform.logs(pod["metadata"]["name"], container["name"])
        operator_logs = platform.kubectl(
            "logs", "-n", SYSTEM_NAMESPACE, "-l", "app.kubernetes.io/component=operator", "--tail=-1",
            check=False,
        )  # fmt: skip
        assert SECRET_KEY not in operator_logs
    finally:
        platform.kubectl(
            "delete", "-n", platform.tenant, "modeldeployment/digits-s3", "trainingjob/digits-s3",
            "secret/modelops-store-credentials", "--wait=true", "--timeout=120s", check=False,
        )  # fmt: skip
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def test_a_custom_network_from_a_source_archive_trains_on_ray_pods_and_is_stored_as_onnx(
    platform: Platform,
) -> None:
    """The examples/custom network: its code goes to the store as a source archive (no
    image registry), the job's Ray pods load it, and the version is a self-contained ONNX
    graph that a server runs without the code."""
    custom = ROOT / "examples" / "custom"
    pushed = subprocess.run(
        [sys.executable, "-m", "modelops", "source", "push", str(custom / "src"),
         "--store", f"file://{platform.store}/models", "--name", "forecast-cnn"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    host_uri = pushed.stdout.strip().splitlines()[-1]
    # The pods see the store's volume at /var/lib/modelops.
    pod_uri = host_uri.replace(f"file://{platform.store}", "file:///var/lib/modelops")
    series = platform.store / "data" / "series"
    subprocess.run(
        [sys.executable, "-m", "modelops_runtime", "datasets", "sunspots", str(series)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for path in [series, *series.rglob("*"), *(platform.store / "models").rglob("*")]:
        os.chmod(path, 0o777 if path.is_dir() else 0o666)
    job = yaml.safe_load((custom / "trainingjob.yaml").read_text())
    job["spec"]["model"]["source"] = pod_uri
    job["spec"]["training"]["epochs"] = 4
    job["spec"]["resources"].update({"cpusPerWorker": "500m", "memoryPerWorker": "2Gi"})
    platform.apply(job, platform.tenant)
    name = job["metadata"]["name"]

    _wait_succeeded(platform, name)
    stored = platform.store / "models" / platform.tenant / "series-cnn" / "v1"
    files = {p.name for p in stored.iterdir()}
    # model.onnx is what servers load; the state dict stays for warm starts.
    assert {"model.onnx", "model.json"} <= files, files
    card = json.loads((stored / "model.json").read_text())
    assert card["weights_format"] == "onnx", card
    platform.kubectl(
        "delete", "-n", platform.tenant, "trainingjob", name, "--wait=true", "--timeout=120s"
    )


def test_a_search_job_runs_tpe_with_early_stopping_on_ray_pods(platform: Platform) -> None:
    """A search through the operator: Optuna's TPE proposes, ASHA stops the poor trials,
    the status counts trials by state and shows the best, and the best is stored."""
    job = platform.example("trainingjob.yaml")
    job["metadata"]["name"] = "digits-search"
    job["spec"]["output"]["modelName"] = "digits-search"
    job["spec"]["training"]["epochs"] = 6
    job["spec"]["training"].pop("earlyStopping", None)
    job["spec"]["training"].pop("schedule", None)
    job["spec"]["resources"].update({"cpusPerWorker": "500m", "memoryPerWorker": "2Gi"})
    job["spec"]["search"] = {
        "trials": 4,
        "maxConcurrent": 2,
        "metric": "val_accuracy",
        "mode": "max",
        "space": [
            {"path": "training.optimizer.learningRate", "type": "logUniform",
             "low": 0.00001, "high": 0.01},
        ],
    }  # fmt: skip
    platform.apply(job, platform.tenant)
    name = job["metadata"]["name"]

    status = _wait_succeeded(platform, name, timeout=1200)
    search = status["search"]
    counts = search["trialCounts"]
    assert counts.get("finished", 0) + counts.get("stoppedEarly", 0) == 4, search
    assert counts.get("failed", 0) == 0 and counts.get("running", 0) == 0, search
    best = search["best"]
    assert best["metrics"]["val_accuracy"] == max(
        row["metrics"]["val_accuracy"] for row in search["top"]
    ), search
    assert "training.optimizer.learningRate" in best["params"], best
    stored = platform.store / "models" / platform.tenant / "digits-search" / "v1"
    assert (stored / "model.safetensors").exists(), list(stored.parent.iterdir())
    platform.kubectl(
        "delete", "-n", platform.tenant, "trainingjob", name, "--wait=true", "--timeout=120s"
    )


def test_deleting_the_resources_leaves_nothing_behind(platform: Platform) -> None:
    platform.kubectl(
        "delete",
        "-n",
        platform.tenant,
        "modeldeployment",
        "digits",
        "--wait=true",
        "--timeout=120s",
    )
    platform.kubectl(
        "delete", "-n", platform.tenant, "incrementalupdates,trainingjobs", "--all",
        "--wait=true", "--timeout=180s",
    )  # fmt: skip

    def empty() -> bool:
        left = platform.kubectl(
            "get", "pods,services,deployments,configmaps,serviceaccounts,roles,rolebindings,jobs",
            "-n", platform.tenant, "-l", "app.kubernetes.io/managed-by=modelops", "-o", "name",
        )  # fmt: skip
        # A model's version book (`modelops-versions-<model>`) belongs to the model, not to
        # a job: it outlives the jobs, as the versions in the store do, so numbers are never
        # handed out twice.
        children = [n for n in left.split() if not n.startswith("configmap/modelops-versions-")]
        return not children

    poll("the operator's children to be gone", empty, timeout=180)


# -- helpers --------------------------------------------------------------------------------------


def _holdout(folder: Path) -> tuple[Any, list[int]]:
    import numpy as np
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    columns = [c for c in tables[0].column_names if c != "target"]
    features = np.concatenate(
        [np.stack([t.column(c).to_numpy() for c in columns], axis=1) for t in tables]
    ).astype("float32")
    labels = [int(v) for t in tables for v in t.column("target").to_pylist()]
    return features, labels


def _infer(base: str, input_name: str, features: Any) -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": input_name,
                "shape": list(features.shape),
                "datatype": "FP32",
                "data": features.ravel().tolist(),
            }
        ]
    }
    request = urllib.request.Request(
        base + "/infer",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer: dict[str, Any] = json.load(resp)
    return answer


def _class_indices(answer: dict[str, Any]) -> list[int]:
    outputs = {o["name"]: o for o in answer["outputs"]}
    for output in outputs.values():
        if output["datatype"] in ("INT64", "INT32"):
            return [int(v) for v in output["data"]]
    probs = next(iter(outputs.values()))
    rows, cols = probs["shape"]
    data = probs["data"]
    return [max(range(cols), key=lambda j: data[i * cols + j]) for i in range(rows)]


class Traffic:
    """Requests through the Service at a steady rate, from a thread, with ground truth.

    Each answer's request id gets the true labels back as feedback (the accuracy the canary
    gate reads); answers are counted by the version that served them.
    """

    def __init__(self, platform: Platform, name: str, rps: float, feedback: bool = True) -> None:
        service = platform.get("service", name, "-n", platform.tenant)
        port = service["spec"]["ports"][0]["port"]
        self.base = f"http://{service['spec']['clusterIP']}:{port}/v2/models/{name}"
        with urllib.request.urlopen(self.base, timeout=10) as resp:
            self.input_name = json.load(resp)["inputs"][0]["name"]
        self.features, self.labels = _holdout(platform.store / "data" / "digits" / "holdout")
        self.interval = 1.0 / rps
        self.feedback = feedback
        self.versions: dict[int, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The answer and the feedback id the server issued for it."""
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer: dict[str, Any] = json.load(resp)
            feedback_id = resp.headers.get("x-feedback-id", "")
        return answer, feedback_id

    def _run(self) -> None:
        rows = len(self.labels)
        start = 0
        while not self._stop.is_set():
            began = time.monotonic()
            picked = [(start + i) % rows for i in range(8)]
            start = (start + 8) % rows
            batch = self.features[picked]
            body = {
                "inputs": [
                    {"name": self.input_name, "shape": list(batch.shape), "datatype": "FP32",
                     "data": batch.ravel().tolist()}
                ]
            }  # fmt: skip
            try:
                answer, feedback_id = self._post("/infer", body)
                version = int(answer.get("model_version") or 0)
                self.versions[version] = self.versions.get(version, 0) + 1
                if self.feedback:
                    labels = [self.labels[i] for i in picked]
                    self._post("/feedback", {"id": feedback_id, "labels": labels})
            except Exception as error:  # counted, the test decides
                self.failures.append(f"{type(error).__name__}: {error}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


def _train_version(
    platform: Platform, name: str, epochs: int, learning_rate: float | None = None
) -> None:
    """Another TrainingJob writing the next version of the `digits` model; waits for it."""
    job = platform.example("trainingjob.yaml")
    job["metadata"]["name"] = name
    job["spec"]["training"]["epochs"] = epochs
    job["spec"]["training"].pop("earlyStopping", None)
    job["spec"]["training"].pop("schedule", None)
    if learning_rate is not None:
        job["spec"]["training"]["optimizer"]["learningRate"] = learning_rate
    job["spec"]["resources"].update(
        {"workers": 1, "cpusPerWorker": "500m", "memoryPerWorker": "2Gi"}
    )
    platform.apply(job, platform.tenant)

    _wait_succeeded(platform, name)


def _wait_succeeded(
    platform: Platform,
    name: str,
    timeout: float = 900,
    extra: Callable[[], str] = lambda: "",
) -> dict[str, Any]:
    """The TrainingJob's status once Succeeded; fails at once if it fails."""

    def finished() -> dict[str, Any] | None:
        status = platform.get("trainingjob", name, "-n", platform.tenant).get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"{name} failed: {status}")
        return status if status.get("phase") == "Succeeded" else None

    try:
        return poll(f"TrainingJob {name} Succeeded", finished, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{extra()}\n{platform.diagnostics()}") from exc


def _wait_deployment(
    platform: Platform, name: str, what: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = platform.get("modeldeployment", name, "-n", platform.tenant)
        status: dict[str, Any] = obj.get("status") or {}
        return status if ready(status) else None

    try:
        return poll(what, check, timeout=600)
    except AssertionError as exc:
        status = platform.get("modeldeployment", name, "-n", platform.tenant).get("status")
        raise AssertionError(f"{exc}\nstatus: {status}\n{platform.diagnostics()}") from exc
