"""The local control plane behaves like a real cluster: controllers, scheduling, validation.

Everything runs against the real binaries (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok); see tests/controlplane/cluster.py.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster
controlplane = sys.modules["modelops_controlplane"]  # loaded by tests/cluster/conftest.py

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU_NODES = {n.name for n in controlplane.DEFAULT_NODES if not n.gpus}
GPU_NODES = {n.name for n in controlplane.DEFAULT_NODES if n.gpus}
GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "present",
    "effect": "NoSchedule",
}
poll_until = controlplane.poll_until


def _core(k8s: Any) -> Any:
    """CoreV1Api, typed loosely: the tests read many optional fields of the API models."""
    return client.CoreV1Api(k8s)


def _apps(k8s: Any) -> Any:
    return client.AppsV1Api(k8s)


def _pod_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions or []) if pod.status else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _deployment(name: str, replicas: int, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def _container(**resources: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/fake:1"}
    if resources:
        container["resources"] = resources
    return container


def _running_pods(core: Any, namespace: str, app: str, count: int) -> Any:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    done = [p for p in pods if p.status.phase == "Running" and _pod_ready(p)]
    return done if len(done) == count and len(pods) == count else None


# --------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------


def test_kubectl_and_helm_report_pinned_versions(control_plane: Any) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == controlplane.K8S_VERSION
    assert out["serverVersion"]["gitVersion"] == controlplane.K8S_VERSION
    major, minor = controlplane.K8S_VERSION.lstrip("v").split(".")[:2]
    assert (out["serverVersion"]["major"], out["serverVersion"]["minor"]) == (major, minor)

    helm = control_plane.helm("version", "--template", "{{.Version}}").stdout.strip()
    assert helm == controlplane.HELM_VERSION

    versions = controlplane.binary_versions()
    assert controlplane.ETCD_VERSION.lstrip("v") in versions["etcd"]
    assert controlplane.KWOK_VERSION.lstrip("v") in versions["kwok"]


# --------------------------------------------------------------------------------------
# Controllers, scheduler and kwok
# --------------------------------------------------------------------------------------


def test_deployment_gets_replicaset_and_ready_pods_on_kwok_nodes(k8s: Any, namespace: str) -> None:
    apps, core = _apps(k8s), _core(k8s)
    apps.create_namespaced_deployment(
        namespace, _deployment("web", 3, {"containers": [_container()]})
    )

    rs = poll_until(
        "a ReplicaSet owned by the Deployment",
        lambda: next(iter(apps.list_namespaced_replica_set(namespace).items), None),
        timeout=60,
    )
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert rs.metadata.owner_references[0].name == "web"

    pods = poll_until(
        "3 Running+Ready pods", lambda: _running_pods(core, namespace, "web", 3), timeout=90
    )
    assert {p.spec.node_name for p in pods} <= CPU_NODES | GPU_NODES
    for pod in pods:
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert pod.status.pod_ip
    poll_until(
        "Deployment available",
        lambda: (
            apps.read_namespaced_deployment(
                namespace=namespace, name="web"
            ).status.available_replicas
            == 3
        ),
        timeout=60,
    )


def test_gpu_pod_with_toleration_lands_on_gpu_node(k8s: Any, namespace: str) -> None:
    core = _core(k8s)
    gpu = {"limits": {"nvidia.com/gpu": "2"}, "requests": {"cpu": "1"}}
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer", "labels": {"app": "trainer"}},
            "spec": {"containers": [_container(**gpu)], "tolerations": [GPU_TOLERATION]},
        },
    )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "no-toleration"},
            "spec": {"containers": [_container(**gpu)]},
        },
    )

    (pod,) = poll_until(
        "the GPU pod Running", lambda: _running_pods(core, namespace, "trainer", 1), timeout=60
    )
    assert pod.spec.node_name in GPU_NODES

    def unschedulable() -> Any:
        p = core.read_namespaced_pod(name="no-toleration", namespace=namespace)
        conds = [c for c in p.status.conditions or [] if c.type == "PodScheduled"]
        return (
            p
            if conds and conds[0].status == "False" and conds[0].reason == "Unschedulable"
            else None
        )

    pending = poll_until("the untolerated GPU pod Unschedulable", unschedulable, timeout=60)
    assert pending.spec.node_name is None
    assert pending.status.phase == "Pending"
    message = pending.status.conditions[0].message
    assert "untolerated taint" in message and "nvidia.com/gpu" in message


def test_pods_without_toleration_stay_off_gpu_nodes(k8s: Any, namespace: str) -> None:
    apps, core = _apps(k8s), _core(k8s)
    spec = {"containers": [_container(requests={"cpu": "100m", "memory": "64Mi"})]}
    apps.create_namespaced_deployment(namespace, _deployment("cpu-only", 8, spec))
    pods = poll_until(
        "8 Running pods", lambda: _running_pods(core, namespace, "cpu-only", 8), timeout=90
    )
    assert {p.spec.node_name for p in pods} <= CPU_NODES


# --------------------------------------------------------------------------------------
# CRD validation (schema types, enums, CEL) from crds/
# --------------------------------------------------------------------------------------

TRAININGJOB_CRD = "trainingjobs.modelops.dev"


def _trainingjob_crd() -> dict[str, Any]:
    crds_dir = REPO_ROOT / "crds"
    for path in sorted(crds_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc.get("kind") == "CustomResourceDefinition"
                and doc["metadata"]["name"] == TRAININGJOB_CRD
            ):
                return dict(doc)
    pytest.fail(f"crds/ has no CustomResourceDefinition {TRAININGJOB_CRD} (looked in {crds_dir})")


def _example_trainingjob() -> dict[str, Any]:
    """The first TrainingJob under examples/ (kept valid by `modelops validate examples`)
    of a built-in architecture, which the tests below vary."""
    for path in sorted((REPO_ROOT / "examples").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc.get("kind") == "TrainingJob"
                and doc["spec"]["model"]["architecture"] != "custom"
            ):
                return dict(doc)
    pytest.fail("examples/ has no TrainingJob manifest to start from")


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[leaf] = value


def _search(**fields: Any) -> dict[str, Any]:
    """A spec.search over one learning-rate range, with `fields` on top."""
    space = [
        {"path": "training.optimizer.learningRate", "type": "logUniform", "low": 1e-4, "high": 1e-1}
    ]
    return {"space": space, **fields}


@pytest.fixture
def trainingjob(k8s: Any, namespace: str, control_plane: Any) -> dict[str, Any]:
    """A valid TrainingJob (accepted by a server-side dry run) for the CRD in crds/."""
    crd = _trainingjob_crd()
    assert any(v["name"] == "v1alpha1" for v in crd["spec"]["versions"])
    installed = control_plane.rest.get(
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{TRAININGJOB_CRD}"
    )
    assert any(
        c["type"] == "Established" and c["status"] == "True"
        for c in installed["status"]["conditions"]
    )
    obj = _example_trainingjob()
    obj["metadata"] = {"name": "valid", "namespace": namespace}
    _set(obj, "spec.training.epochs", 3)
    _set(obj, "spec.model.architecture", "mlp")
    _set(obj, "spec.resources.minWorkers", 1)
    _set(obj, "spec.resources.maxWorkers", 3)
    _set(obj, "spec.resources.workers", 2)
    _create_trainingjob(k8s, namespace, obj, dry_run=True)
    return obj


def _create_trainingjob(k8s: Any, namespace: str, obj: dict[str, Any], dry_run: bool) -> Any:
    return client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        "modelops.dev",
        "v1alpha1",
        namespace,
        "trainingjobs",
        obj,
        dry_run="All" if dry_run else None,
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"spec.training.epochs": "ten"}, ["spec.training.epochs", "must be of type integer"]),
        ({"spec.training.epochs": 0}, ["spec.training.epochs", "greater than or equal to 1"]),
        (
            {"spec.model.architecture": "transformer"},
            ["spec.model.architecture", 'Unsupported value: "transformer"'],
        ),
        (
            {"spec.resources.minWorkers": 3, "spec.resources.maxWorkers": 2},
            ["spec.resources", "minWorkers", "maxWorkers"],
        ),
        (
            {"spec.search": _search(algorithm="tpe", trials=4, startupTrials=5)},
            ["spec.search.startupTrials", "startupTrials must not exceed trials"],
        ),
        (
            {"spec.search": _search(algorithm="random", trials=4, startupTrials=2)},
            ["spec.search.startupTrials", "startupTrials applies to algorithm tpe only"],
        ),
    ],
    ids=[
        "wrong-type",
        "below-minimum",
        "unknown-enum",
        "cel-min-gt-max",
        "cel-startup-gt-trials",
        "cel-startup-without-tpe",
    ],
)
def test_invalid_trainingjob_is_rejected_with_field_path(
    k8s: Any,
    namespace: str,
    trainingjob: dict[str, Any],
    changes: dict[str, Any],
    expected: list[str],
) -> None:
    bad = copy.deepcopy(trainingjob)
    for dotted, value in changes.items():
        _set(bad, dotted, value)
    with pytest.raises(ApiException) as err:
        _create_trainingjob(k8s, namespace, bad, dry_run=False)
    assert err.value.status == 422, err.value.body
    status = json.loads(err.value.body or "{}")
    message = status["message"]
    for fragment in expected:
        assert fragment in message, message
    fields = [c.get("field", "") for c in status["details"]["causes"]]
    assert any(f.startswith(expected[0]) for f in fields), fields


def test_valid_trainingjob_is_stored(k8s: Any, namespace: str, trainingjob: dict[str, Any]) -> None:
    created = _create_trainingjob(k8s, namespace, trainingjob, dry_run=False)
    assert created["spec"]["training"]["epochs"] == 3
    assert created["metadata"]["uid"]


def test_kubectl_apply_of_the_crds_is_clean(control_plane: Any) -> None:
    """The control plane submits the CRDs as `kubectl apply` leaves them, so a user's
    `kubectl apply -f crds/` (docs) finds the last-applied annotation and warns nothing."""
    applied = control_plane.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    assert applied.stderr == "", applied.stderr
    names = {doc["metadata"]["name"] for doc in _crd_docs()}
    assert {line.split()[0].split("/")[-1] for line in applied.stdout.splitlines()} == names


def _crd_docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


# --------------------------------------------------------------------------------------
# Server-side apply and optimistic concurrency
# --------------------------------------------------------------------------------------

APPLY = "application/apply-patch+yaml"


def _configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_server_side_apply_and_conflicts(k8s: Any, namespace: str) -> None:
    core = _core(k8s)
    cm = core.patch_namespaced_config_map(
        "settings",
        namespace,
        _configmap("settings", {"epochs": "3"}),
        field_manager="alice",
        _content_type=APPLY,
    )
    assert cm.data == {"epochs": "3"}
    managers = {m.manager for m in cm.metadata.managed_fields}
    assert "alice" in managers

    # A second manager may add its own field...
    cm = core.patch_namespaced_config_map(
        "settings",
        namespace,
        _configmap("settings", {"lr": "0.1"}),
        field_manager="bob",
        _content_type=APPLY,
    )
    assert cm.data == {"epochs": "3", "lr": "0.1"}

    # ...but changing a field owned by someone else is a conflict (409) unless forced.
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "settings",
            namespace,
            _configmap("settings", {"epochs": "5"}),
            field_manager="bob",
            _content_type=APPLY,
        )
    body = err.value.body or ""
    assert err.value.status == 409, body
    assert "conflict" in body.lower() and "alice" in body, body

    cm = core.patch_namespaced_config_map(
        "settings",
        namespace,
        _configmap("settings", {"epochs": "5"}),
        field_manager="bob",
        force=True,
        _content_type=APPLY,
    )
    assert cm.data["epochs"] == "5"


def test_update_with_stale_resource_version_is_409(k8s: Any, namespace: str) -> None:
    core = _core(k8s)
    core.create_namespaced_config_map(namespace, _configmap("counter", {"n": "0"}))
    stale = core.read_namespaced_config_map("counter", namespace)
    fresh = core.read_namespaced_config_map("counter", namespace)
    fresh.data["n"] = "1"
    core.replace_namespaced_config_map("counter", namespace, fresh)

    stale.data["n"] = "2"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("counter", namespace, stale)
    assert err.value.status == 409, err.value.body
    assert "the object has been modified" in (err.value.body or "")
    assert core.read_namespaced_config_map("counter", namespace).data["n"] == "1"


# --------------------------------------------------------------------------------------
# Finalizers and garbage collection
# --------------------------------------------------------------------------------------

FINALIZER = "modelops.dev/test-finalizer"


def _gone(read: Any) -> bool:
    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def test_finalizer_blocks_deletion_and_owned_children_are_collected(
    k8s: Any, namespace: str
) -> None:
    core = _core(k8s)
    parent_body = _configmap("parent", {"role": "owner"})
    parent_body["metadata"]["finalizers"] = [FINALIZER]
    parent = core.create_namespaced_config_map(namespace, parent_body)
    child_body = _configmap("child", {"role": "dependent"})
    child_body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "parent",
            "uid": parent.metadata.uid,
        }
    ]
    core.create_namespaced_config_map(namespace, child_body)

    core.delete_namespaced_config_map("parent", namespace)
    held = core.read_namespaced_config_map("parent", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == [FINALIZER]
    # While the owner still exists (finalizer pending), its dependent is kept.
    assert not _gone(lambda: core.read_namespaced_config_map("child", namespace))

    core.patch_namespaced_config_map(
        "parent",
        namespace,
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json",
    )
    poll_until(
        "the parent to be deleted",
        lambda: _gone(lambda: core.read_namespaced_config_map("parent", namespace)),
        timeout=30,
    )
    poll_until(
        "the child to be garbage-collected",
        lambda: _gone(lambda: core.read_namespaced_config_map("child", namespace)),
        timeout=60,
    )


def test_deleting_a_deployment_collects_replicasets_and_pods(k8s: Any, namespace: str) -> None:
    apps, core = _apps(k8s), _core(k8s)
    apps.create_namespaced_deployment(
        namespace, _deployment("gc", 2, {"containers": [_container()]})
    )
    poll_until("2 Running pods", lambda: _running_pods(core, namespace, "gc", 2), timeout=90)

    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Foreground")
    poll_until(
        "ReplicaSets and Pods collected",
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        timeout=90,
    )
    poll_until(
        "the Deployment to be gone",
        lambda: _gone(lambda: apps.read_namespaced_deployment("gc", namespace)),
        timeout=30,
    )
