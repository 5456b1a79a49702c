"""The ModelDeployment's children, asserted as the dicts the builders return."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelops.api.deployment import ModelDeployment, ModelDeploymentSpec
from modelops.k8s.modeldeployment import batchjob, builders, names
from tests.unit.manifests import model_deployment


def spec(**changes: Any) -> ModelDeploymentSpec:
    base: dict[str, Any] = {"model": {"name": "digits", "version": "3"}}
    base.update(changes)
    return ModelDeploymentSpec.model_validate(base)


def context(
    md_spec: ModelDeploymentSpec | None = None,
    *,
    version: int | None = 3,
    replicas: int = 2,
    claim: str | None = "models",
) -> builders.ServingContext:
    return builders.ServingContext(
        name="digits",
        namespace="ml",
        uid="uid-1",
        spec=md_spec or spec(),
        settings=builders.ServingSettings(image="runtime:1", store_volume_claim=claim),
        version=version,
        replicas=replicas,
        admin_token="token-of-digits",
    )


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return found


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_example_manifest_builds() -> None:
    md = ModelDeployment.model_validate(model_deployment())
    ctx = builders.ServingContext(
        name=md.metadata.name,
        namespace="default",
        uid="u",
        spec=md.spec,
        settings=builders.ServingSettings(image="img"),
        version=1,
        replicas=1,
        admin_token="t",
    )
    kinds = [child["kind"] for child in builders.children(ctx)]
    assert kinds == ["Service", "Service", "PodDisruptionBudget", "Secret", "Deployment"]


def test_replicas_find_each_other_for_feedback_through_a_headless_service() -> None:
    ctx = context(spec())
    peers = builders.peers_service(ctx)
    assert peers["metadata"]["name"] == "digits-peers"
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"] == builders.service(ctx)["spec"]["selector"]
    server = container(builders.deployment(ctx))
    args = server["command"]
    assert arg(args, "--peers-dns") == "digits-peers"
    assert arg(args, "--advertise-address") == "$(POD_IP):8080"
    env = {e["name"]: e for e in server["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_deployment_runs_the_stable_version_with_the_batching_settings() -> None:
    md_spec = spec(
        batching={"maxBatchSize": 64, "maxWaitMs": 2.5, "maxQueue": 99, "timeoutMs": 700}
    )
    manifest = builders.deployment(context(md_spec))
    args = container(manifest)["command"]
    assert args[:4] == ["python", "-m", "modelops_runtime", "serve"]
    assert arg(args, "--model") == "digits"
    assert arg(args, "--version") == "3"
    assert arg(args, "--store") == "file:///var/lib/modelops/models"
    assert arg(args, "--max-batch-size") == "64"
    assert arg(args, "--max-wait-ms") == "2.5"
    assert arg(args, "--max-queue") == "99"
    assert arg(args, "--timeout-ms") == "700"
    assert arg(args, "--port") == str(builders.HTTP_PORT)
    assert "--candidate" not in args and "--shadow" not in args
    assert manifest["spec"]["replicas"] == 2
    assert manifest["metadata"]["name"] == "digits-server"
    annotations = manifest["spec"]["template"]["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_VERSION] == "3"


def test_a_version_change_is_a_rolling_update_without_unavailable_pods() -> None:
    old = builders.deployment(context(version=3))
    new = builders.deployment(context(version=4))
    assert old["spec"]["template"] != new["spec"]["template"]
    assert old["spec"]["selector"] == new["spec"]["selector"]
    strategy = new["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }


def test_probes_hit_the_inference_protocol_health_endpoints() -> None:
    server = container(builders.deployment(context()))
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]


def test_the_grpc_port_is_served_and_exposed_as_h2c() -> None:
    ctx = context()
    args = container(builders.deployment(ctx))["command"]
    assert arg(args, "--grpc-port") == str(builders.GRPC_PORT)
    ports = {p["name"]: p for p in builders.service(ctx)["spec"]["ports"]}
    assert ports["grpc"] == {
        "name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
        "appProtocol": "kubernetes.io/h2c",
    }
    assert ports["http"]["appProtocol"] == "http"


def test_restricted_security_context_and_a_writable_tmp() -> None:
    manifest = builders.deployment(context())
    pod = manifest["spec"]["template"]["spec"]
    server = container(manifest)
    security = server["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
    store = {"name": "store", "mountPath": builders.STORE_MOUNT, "readOnly": True}
    assert store in server["volumeMounts"]


def test_resources_with_gpus_and_scheduling() -> None:
    md_spec = spec(
        resources={
            "cpu": "2",
            "memory": "4Gi",
            "gpu": 1,
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "priorityClassName": "serving",
            "image": "custom:2",
        }
    )
    manifest = builders.deployment(context(md_spec))
    server = container(manifest)
    assert server["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "4Gi", "nvidia.com/gpu": "1"},
    }
    assert server["image"] == "custom:2"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "serving"


def test_no_gpu_no_gpu_request() -> None:
    server = container(builders.deployment(context()))
    assert "nvidia.com/gpu" not in server["resources"]["requests"]
    assert server["image"] == "runtime:1"


def test_an_ensemble_is_served_by_the_same_deployment() -> None:
    md_spec = spec(
        ensemble={
            "method": "weighted",
            "members": [{"version": 1, "weight": 30}, {"version": 2, "weight": 70}],
        }
    )
    args = container(builders.deployment(context(md_spec, version=None)))["command"]
    assert arg(args, "--members") == "1:30,2:70"
    assert arg(args, "--ensemble-method") == "weighted"
    assert arg(args, "--version") == builders.ENSEMBLE_LABEL
    vote = spec(ensemble={"method": "vote", "members": [{"version": 4}, {"version": 5}]})
    assert arg(container(builders.deployment(context(vote)))["command"], "--members") == "4,5"


def test_service_and_budget_select_the_server_pods() -> None:
    ctx = context()
    deployment = builders.deployment(ctx)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = builders.service(ctx)
    budget = builders.disruption_budget(ctx)
    assert service["metadata"]["name"] == "digits"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for selector in (
        service["spec"]["selector"],
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    for child in builders.children(ctx):
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert child["metadata"]["namespace"] == "ml"


def test_batch_prediction_job_uses_the_serving_version() -> None:
    md_spec = spec(batchPrediction={"inputUri": "file:///data/in", "outputUri": "file:///data/out"})
    job = batchjob.batch_job(context(md_spec, version=7))
    args = container(job)["command"]
    assert args[:4] == ["python", "-m", "modelops_runtime", "predict-batch"]
    assert arg(args, "--version") == "7"
    assert arg(args, "--input") == "file:///data/in"
    assert arg(args, "--output") == "file:///data/out"
    assert arg(args, "--format") == "parquet"
    assert arg(args, "--batch-size") == "1024"
    # The counts come back as the termination message: the operator never reads the output.
    assert arg(args, "--termination-log") == container(job)["terminationMessagePath"]
    assert arg(args, "--run-id") == job["metadata"]["name"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
    # A new version or dataset is a new Job; the same ones are the same Job.
    again = batchjob.batch_job(context(md_spec, version=7))
    other = batchjob.batch_job(context(md_spec, version=8))
    assert job["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]


def test_batch_prediction_writes_to_the_store_while_servers_only_read_it() -> None:
    """Found on a real node: the Job's output went to a read-only mount and it failed."""
    md_spec = spec(batchPrediction={"inputUri": "file:///data/in", "outputUri": "file:///data/out"})
    ctx = context(md_spec, version=7)
    job = batchjob.batch_job(ctx)
    pod = job["spec"]["template"]["spec"]
    store = next(v for v in pod["volumes"] if v["name"] == "store")
    mount = next(m for m in container(job)["volumeMounts"] if m["name"] == "store")
    assert store["persistentVolumeClaim"] == {"claimName": "models", "readOnly": False}
    assert mount["readOnly"] is False
    server = builders.deployment(ctx)["spec"]["template"]["spec"]
    store = next(v for v in server["volumes"] if v["name"] == "store")
    assert store["persistentVolumeClaim"]["readOnly"] is True


def test_batch_prediction_needs_a_version() -> None:
    md_spec = spec(batchPrediction={"inputUri": "file:///a", "outputUri": "file:///b"})
    with pytest.raises(ValueError):
        batchjob.batch_job(context(md_spec, version=None))


def test_long_names_stay_valid_labels() -> None:
    long = "a" * 250
    for name in (names.service(long), names.deployment(long), names.batch_job(long, 3, "x", "y")):
        assert len(name) <= 63
    assert names.service("9lives").startswith("md-9lives")
    assert names.deployment("x.y") != names.deployment("x-y")


def test_a_batch_pods_report_is_read_from_its_termination_message() -> None:
    from modelops.k8s.modeldeployment.controller import batch_report

    def pod(message: str) -> dict[str, Any]:
        terminated = {"exitCode": 0, "message": message}
        return {"status": {"containerStatuses": [{"name": "predict", "state": {"terminated": terminated}}]}}

    counts = {"version": 3, "shards_total": 4, "shards_done": 4, "shards_skipped": 0, "rows": 90}
    assert batch_report(pod(json.dumps(counts))) == counts
    assert batch_report(pod("Traceback (most recent call last): ...")) == {}
    assert batch_report(pod('{"shards_done": "4"}')) == {}
    assert batch_report({"status": {}}) == {}
