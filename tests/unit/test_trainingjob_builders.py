"""The TrainingJob's children, asserted as the plain dicts the builders return."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelops.api.base import NAME_PATTERN
from modelops.api.training import TrainingJobSpec
from modelops.k8s.trainingjob import builders, names
from tests.unit.manifests import training_job

UID = "0b6d1a52-0000-4000-8000-000000000001"
TOKEN = "ray-token-of-digits-mlp"
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _spec(**resources: Any) -> TrainingJobSpec:
    spec = training_job()["spec"]
    spec["resources"].update(resources)
    return TrainingJobSpec.model_validate(spec)


def _ctx(
    spec: TrainingJobSpec | None = None, attempt: int = 0, pvc: str | None = None
) -> builders.JobContext:
    return builders.JobContext(
        name="digits-mlp",
        namespace="team-a",
        uid=UID,
        spec=spec or _spec(),
        version=7,
        attempt=attempt,
        settings=builders.ClusterSettings(
            image="registry.example/runtime:1", store_volume_claim=pvc
        ),
    )


GPU_SPEC = dict(
    workers=3,
    gpusPerWorker=2,
    cpusPerWorker="4",
    memoryPerWorker="16Gi",
    nodeSelector={"pool": "gpu"},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ],
    priorityClassName="training",
)


def test_cluster_has_head_service_rbac_spec_and_one_pod_per_worker() -> None:
    objects = builders.cluster(_ctx(_spec(**GPU_SPEC), attempt=2), TOKEN)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("NetworkPolicy", "digits-mlp-ray"),
        ("Secret", "digits-mlp-ray-auth"),
        ("ServiceAccount", "digits-mlp-driver"),
        ("ConfigMap", "digits-mlp-2-spec"),
        ("Pod", "digits-mlp-2-head"),
        ("Pod", "digits-mlp-2-worker-0"),
        ("Pod", "digits-mlp-2-worker-1"),
        ("Pod", "digits-mlp-2-worker-2"),
        ("Service", "digits-mlp-head"),
        ("Role", "digits-mlp-driver"),
        ("RoleBinding", "digits-mlp-driver"),
    ]


def test_every_ray_node_authenticates_with_the_jobs_own_token() -> None:
    """Finding 2: GCS, client and dashboard refuse callers without the job's token."""
    ctx = _ctx(_spec(workers=2))
    secret = builders.auth_secret(ctx, TOKEN)
    assert secret["metadata"]["name"] == "digits-mlp-ray-auth"
    assert secret["immutable"] is True
    assert base64.b64decode(secret["data"]["auth_token"]).decode() == TOKEN
    ref = {"secretKeyRef": {"name": "digits-mlp-ray-auth", "key": "auth_token"}}
    pods = [builders.head_pod(ctx), builders.worker_pod(ctx, 0), builders.worker_pod(ctx, 1)]
    for pod in pods:
        spec = pod["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"] == ref, container["name"]
            # The token itself never appears in a pod spec (pods are readable more widely).
            assert TOKEN not in json.dumps(pod)


def test_the_network_policy_admits_only_the_jobs_own_pods() -> None:
    """Finding 2: no pod outside the job (another tenant's, or this namespace's) gets in."""
    ctx = _ctx()
    policy = builders.network_policy(ctx)
    own = {"matchLabels": {names.LABEL_JOB: "digits-mlp"}}
    assert policy["spec"] == {
        "podSelector": own,
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": own}]}],
    }
    # Every pod of every attempt is selected, so none is left open.
    for pod in (builders.head_pod(_ctx(attempt=3)), builders.worker_pod(ctx, 0)):
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in own["matchLabels"].items())
    kinds = [m["kind"] for m in builders.cluster(ctx, TOKEN)]
    first_pod = kinds.index("Pod")
    assert kinds.index("NetworkPolicy") < first_pod and kinds.index("Secret") < first_pod


def test_every_child_is_owned_by_the_job_and_labelled() -> None:
    for manifest in builders.cluster(_ctx(), TOKEN):
        meta = manifest["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "modelops.dev/v1alpha1",
                "kind": "TrainingJob",
                "name": "digits-mlp",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"][names.LABEL_JOB] == "digits-mlp"
        assert meta["labels"][names.LABEL_MANAGED_BY] == "modelops"
        assert meta["labels"][names.LABEL_MODEL] == "digits"


def test_worker_pod_requests_gpus_and_schedules_as_the_spec_says() -> None:
    pod = builders.worker_pod(_ctx(_spec(**GPU_SPEC), attempt=1), 2)
    spec = pod["spec"]
    assert pod["metadata"]["labels"][names.LABEL_ROLE] == "worker"
    assert pod["metadata"]["labels"][names.LABEL_ATTEMPT] == "1"
    assert pod["metadata"]["labels"][names.LABEL_INDEX] == "2"
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    assert spec["priorityClassName"] == "training"
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
    }
    assert container["command"][:4] == ["ray", "start", "--address=$(RAY_ADDRESS)", "--block"]
    assert "--num-gpus=2" in container["command"]
    assert "--num-cpus=4" in container["command"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAY_ADDRESS"] == "digits-mlp-head.team-a.svc:6379"


def test_cpu_worker_requests_no_gpu_and_rounds_fractional_cpus_up_for_ray() -> None:
    pod = builders.worker_pod(_ctx(_spec(cpusPerWorker="500m", memoryPerWorker="1Gi")), 0)
    (container,) = pod["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    assert "--num-cpus=1" in container["command"]
    assert f"--memory={2**30}" in container["command"]
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_pods_run_restricted() -> None:
    for pod in (builders.head_pod(_ctx()), builders.worker_pod(_ctx(), 0)):
        spec = pod["spec"]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"] == RESTRICTED_CONTAINER
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}


def test_head_runs_the_driver_with_version_job_id_and_gang_size() -> None:
    spec = _spec(workers=4, minWorkers=2, maxWorkers=4)
    pod = builders.head_pod(_ctx(spec, attempt=3))
    (container,) = pod["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "modelops_runtime.driver"]
    args = dict(zip(command[3::2], command[4::2], strict=True))
    assert args == {
        "--spec": "/etc/modelops/spec/trainingjob.yaml",
        "--version": "7",
        "--job-id": UID,
        "--workers": "2",
        "--progress-file": "/tmp/modelops/progress.json",
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert pod["spec"]["automountServiceAccountToken"] is True
    assert pod["spec"]["serviceAccountName"] == "digits-mlp-driver"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["spec"] == {"name": "spec", "configMap": {"name": "digits-mlp-3-spec"}}
    assert pod["metadata"]["annotations"] == {names.ANNOTATION_VERSION: "7"}


def test_workers_get_no_token_and_wait_for_the_head() -> None:
    pod = builders.worker_pod(_ctx(), 0)
    assert pod["spec"]["automountServiceAccountToken"] is False
    (init,) = pod["spec"]["initContainers"]
    assert init["command"] == ["sh", "-c", builders.WAIT_FOR_HEAD]


def test_store_is_the_configured_pvc_or_a_pod_local_folder() -> None:
    with_pvc = builders.head_pod(_ctx(pvc="models"))
    volumes = {v["name"]: v for v in with_pvc["spec"]["volumes"]}
    assert volumes["store"] == {"name": "store", "persistentVolumeClaim": {"claimName": "models"}}
    without = builders.head_pod(_ctx())
    volumes = {v["name"]: v for v in without["spec"]["volumes"]}
    assert volumes["store"] == {"name": "store", "emptyDir": {}}
    (container,) = without["spec"]["containers"]
    assert {"name": "store", "mountPath": "/var/lib/modelops"} in container["volumeMounts"]


def test_s3_store_mounts_nothing_and_reads_credentials_from_an_optional_secret() -> None:
    raw = training_job()["spec"]
    raw["data"]["uri"] = "s3://bucket/digits/train"
    raw["data"].pop("holdoutUri")
    raw["output"]["storeUri"] = "s3://bucket/models"
    pod = builders.worker_pod(_ctx(TrainingJobSpec.model_validate(raw)), 0)
    assert "store" not in {v["name"] for v in pod["spec"]["volumes"]}
    (container,) = pod["spec"]["containers"]
    assert container["envFrom"] == [
        {"secretRef": {"name": "modelops-store-credentials", "optional": True}}
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELOPS_STORE_URI"] == "s3://bucket/models"


def test_head_service_is_headless_and_selects_the_head() -> None:
    service = builders.head_service(_ctx())
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {names.LABEL_JOB: "digits-mlp", names.LABEL_ROLE: "head"}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["gcs"] == 6379


def test_role_allows_patching_only_the_jobs_head_pods() -> None:
    role = builders.role(_ctx(_spec()))  # backoffLimit 3 in the example
    (rule,) = role["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["pods"],
        "resourceNames": [f"digits-mlp-{a}-head" for a in range(4)],
        "verbs": ["get", "patch"],
    }
    binding = builders.role_binding(_ctx())
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "digits-mlp-driver",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "digits-mlp-driver", "namespace": "team-a"}
    ]
    assert builders.service_account(_ctx())["automountServiceAccountToken"] is False


def test_spec_config_map_holds_a_manifest_the_api_models_accept() -> None:
    from modelops.api.training import TrainingJob

    config_map = builders.spec_config_map(_ctx(attempt=1))
    assert config_map["immutable"] is True
    assert config_map["metadata"]["labels"][names.LABEL_ATTEMPT] == "1"
    manifest = yaml.safe_load(config_map["data"]["trainingjob.yaml"])
    job = TrainingJob.model_validate(manifest)
    assert job.metadata.name == "digits-mlp"
    assert job.metadata.uid == UID
    assert job.spec == _spec()


def test_manifests_are_json_serialisable() -> None:
    for manifest in builders.cluster(_ctx(_spec(**GPU_SPEC)), TOKEN):
        json.dumps(manifest)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0),
        ("500m", 0.5),
        ("2Gi", 2.0 * 2**30),
        ("1.5", 1.5),
        ("4k", 4000.0),
        ("1e3", 1000.0),
    ],
)
def test_quantity(text: str, value: float) -> None:
    assert builders.quantity(text) == value


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=6).map(".".join).filter(lambda n: len(n) <= 253))
def test_child_names_are_dns_labels_for_any_job_name(job: str) -> None:
    import re

    label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    for suffix in ("head", "driver", "100-head", "100-worker-1023", "3-spec"):
        name = names.child_name(job, suffix)
        assert len(name) <= 63 and label.match(name), name
        assert re.match(NAME_PATTERN, name)
    assert len(names.job_label(job)) <= 63


def test_distinct_job_names_get_distinct_child_names() -> None:
    assert names.child_name("a.b", "head") != names.child_name("a-b", "head")
    long_a, long_b = "x" * 60 + "a", "x" * 60 + "b"
    assert names.child_name(long_a, "head") != names.child_name(long_b, "head")
    assert names.child_name("digits-mlp", "head") == "digits-mlp-head"
    assert names.child_name("7up", "head").startswith("tj-7up")
