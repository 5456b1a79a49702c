"""Two tenants on the real control plane, each a user bound only to the chart's `modelops-edit`.

The ClusterRoles are the ones the chart renders (helm template), applied as they are;
every request is made as the tenant (impersonation), so the API server's own RBAC and
aggregation decide.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops.api.base import DEFAULT_STORE_URI
from modelops.k8s.trainingjob import names
from tests.cluster.operator_fixture import running_operator, wait_for
from tests.cluster.trainingjob_helpers import GROUP, PLURAL, VERSION, condition, manifest
from tests.unit.test_chart import CHART, helm

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def chart_roles(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    home = tmp_path_factory.mktemp("helm-home")
    rendered = helm(home, "template", "modelops", str(CHART), "--namespace", "modelops-system")
    roles = [
        doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] == "ClusterRole"
        and doc["metadata"]["name"] in ("modelops-view", "modelops-edit")
    ]
    assert len(roles) == 2
    return roles


@pytest.fixture
def other_namespace(control_plane: Any) -> Iterator[str]:
    name = f"tenant-b-{uuid.uuid4().hex[:6]}"
    control_plane.rest.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    try:
        yield name
    finally:
        control_plane.rest.request("DELETE", f"/api/v1/namespaces/{name}")


def _apply_roles(k8s: Any, roles: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(k8s)
    for role in roles:
        try:
            rbac.create_cluster_role(role)
        except ApiException as error:
            if error.status != 409:
                raise
            rbac.replace_cluster_role(role["metadata"]["name"], role)


def _bind(k8s: Any, namespace: str, user: str, role: str) -> None:
    client.RbacAuthorizationV1Api(k8s).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"{user}-{role}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def _as(control_plane: Any, user: str) -> Any:
    api = control_plane.api_client()
    api.set_default_header("Impersonate-User", user)
    return api


def _status(call: Any) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def test_a_tenant_bound_to_modelops_edit_gets_the_three_kinds_and_nothing_else(
    control_plane: Any, k8s: Any, namespace: str, other_namespace: str,
    chart_roles: list[dict[str, Any]],
) -> None:  # fmt: skip
    _apply_roles(k8s, chart_roles)
    _bind(k8s, namespace, "alice", "modelops-edit")
    _bind(k8s, other_namespace, "bob", "modelops-edit")
    alice = _as(control_plane, "alice")
    try:
        custom, core = client.CustomObjectsApi(alice), client.CoreV1Api(alice)
        job = manifest("mine", resources={"workers": 1})
        wait_for(
            "alice may create in her namespace",
            lambda: _status(
                lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
            ) in (200, 409),
        )  # fmt: skip
        assert _status(lambda: custom.list_namespaced_custom_object(
            "modelops.dev", "v1alpha1", namespace, "modeldeployments")) == 200  # fmt: skip
        refused = {
            "another tenant's jobs": lambda: custom.list_namespaced_custom_object(
                GROUP, VERSION, other_namespace, PLURAL
            ),
            "a job in another namespace": lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, other_namespace, PLURAL, manifest("theirs")
            ),
            "the status (the operator's)": lambda: custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, "mine", {"status": {"phase": "Succeeded"}}
            ),
            "Secrets": lambda: core.list_namespaced_secret(namespace),
            "ConfigMaps (version books)": lambda: core.list_namespaced_config_map(namespace),
            "pods": lambda: core.create_namespaced_pod(
                namespace,
                {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            ),
            "kube-system": lambda: core.list_namespaced_pod("kube-system"),
        }
        for what, call in refused.items():
            assert _status(call) == 403, what
    finally:
        alice.close()


def test_the_builtin_view_role_aggregates_modelops_view(
    control_plane: Any, k8s: Any, namespace: str, chart_roles: list[dict[str, Any]]
) -> None:
    _apply_roles(k8s, chart_roles)
    _bind(k8s, namespace, "carol", "view")
    carol = _as(control_plane, "carol")
    try:
        custom = client.CustomObjectsApi(carol)
        wait_for(
            "view includes the ModelOps kinds",
            lambda: _status(
                lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            ) == 200,
            timeout=60,
        )  # fmt: skip
        create = _status(lambda: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest("nope")))  # fmt: skip
        assert create == 403
    finally:
        carol.close()


# -- escapes tried by a tenant, through the operator's webhook and controllers ------------

STORE = DEFAULT_STORE_URI  # the operator's store (the test operator sets none)


def _refusal(call: Any) -> str:
    """The API server's message for a refused create (422 from the schema or the webhook)."""
    with pytest.raises(ApiException) as raised:
        call()
    assert raised.value.status in (400, 422), raised.value
    return str(json.loads(raised.value.body)["message"])


def _head_env(k8s: Any, namespace: str, job: str) -> dict[str, str]:
    def head() -> Any:
        pods = client.CoreV1Api(k8s).list_namespaced_pod(
            namespace, label_selector=f"{names.LABEL_JOB}={names.job_label(job)},{names.LABEL_ROLE}=head"
        ).items
        return pods[0] if pods else None

    pod = wait_for(f"{namespace}/{job} head pod", head)
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def test_a_tenant_cannot_name_another_tenants_store_or_escape_with_names_or_sizes(
    control_plane: Any, k8s: Any, namespace: str, other_namespace: str,
    chart_roles: list[dict[str, Any]],
) -> None:  # fmt: skip
    """Issue 15, the multi-tenant suite: alice (modelops-edit in her namespace only) tries
    the escapes; the schema, the webhook and the controllers stop each, naming the field."""
    _apply_roles(k8s, chart_roles)
    _bind(k8s, namespace, "alice", "modelops-edit")
    _bind(k8s, other_namespace, "bob", "modelops-edit")
    alice, bob = _as(control_plane, "alice"), _as(control_plane, "bob")
    custom, bobs = client.CustomObjectsApi(alice), client.CustomObjectsApi(bob)

    def create(body: dict[str, Any], plural: str = PLURAL) -> Any:
        return lambda: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body
        )

    def job(name: str, **spec: Any) -> dict[str, Any]:
        return manifest(name, resources={"workers": 1, **spec.pop("resources", {})}, **spec)

    with running_operator(control_plane, [namespace, other_namespace], name=f"mt-{namespace}"):
        wait_for(
            "alice may create in her namespace",
            lambda: _status(create(job("probe"))) in (200, 409),
        )  # fmt: skip
        bobs_folder = f"{STORE}/{other_namespace}"
        escapes = {
            "the other tenant's folder of the operator's store": (
                job("steal", output={"modelName": "digits", "storeUri": bobs_folder}),
                PLURAL,
                ["spec.output.storeUri", "inside the operator's store"],
            ),
            "a store path that climbs with '..'": (
                job("climb", output={"modelName": "digits", "storeUri": f"{STORE}/x/../.."}),
                PLURAL,
                ["storeUri"],
            ),
            "data read through '..'": (
                job("peek", data={**manifest("x")["spec"]["data"],
                                  "uri": "file:///var/lib/modelops/data/../../../etc"}),
                PLURAL,
                ["uri"],
            ),
            "a ModelDeployment serving the other tenant's folder": (
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelDeployment",
                    "metadata": {"name": "borrow"},
                    "spec": {"model": {"name": "digits", "storeUri": bobs_folder}},
                },
                "modeldeployments",
                ["spec.model.storeUri", "inside the operator's store"],
            ),
            "a huge list (65 tolerations)": (
                job("many", resources={"tolerations": [
                    {"key": f"k{i}", "operator": "Exists"} for i in range(65)]}),
                PLURAL,
                ["tolerations", "64"],
            ),
            "an overlong feature name": (
                job("wide", data={**manifest("x")["spec"]["data"], "features": ["f" * 300]}),
                PLURAL,
                ["features", "256"],
            ),
        }  # fmt: skip
        for what, (body, plural, words) in escapes.items():
            message = _refusal(create(body, plural))
            for word in words:
                assert word in message, (what, message)

        # The same model name in both namespaces: each namespace's own folder and book.
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job("mine"))
        bobs.create_namespaced_custom_object(
            GROUP, VERSION, other_namespace, PLURAL, job("theirs")
        )
        assert _head_env(k8s, namespace, "mine")["MODELOPS_STORE_URI"] == f"{STORE}/{namespace}"
        assert (
            _head_env(k8s, other_namespace, "theirs")["MODELOPS_STORE_URI"]
            == f"{STORE}/{other_namespace}"
        )

        # A name as long as Kubernetes allows: every child still gets a valid name.
        long_name = ("a" * 63 + ".") * 3 + "b" * 61
        assert len(long_name) == 253
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job(long_name))
        env = _head_env(k8s, namespace, long_name)
        assert env["RAY_ADDRESS"].split(".")[0] != long_name
        children = client.CoreV1Api(k8s).list_namespaced_service(namespace).items
        assert children and all(len(s.metadata.name) <= 63 for s in children)

        # A reference to an object of the other namespace reaches nothing there.
        bobs.create_namespaced_custom_object(
            GROUP, VERSION, other_namespace, PLURAL, job("recipe")
        )
        update = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IncrementalUpdate",
            "metadata": {"name": "borrowed"},
            "spec": {"trainingJobRef": {"name": "recipe", "namespace": other_namespace}},
        }
        if _status(create(update, "incrementalupdates")) == 200:  # unknown field pruned
            stored = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "incrementalupdates", "borrowed"
            )
            assert stored["spec"]["trainingJobRef"] == {"name": "recipe"}
            status = wait_for(
                "the update's status",
                lambda: custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "incrementalupdates", "borrowed"
                ).get("status"),
            )
            assert "TrainingJob recipe not found" in json.dumps(status), status
    alice.close()
    bob.close()


def test_without_the_webhook_a_modeldeployment_against_the_policy_gets_no_pods(
    control_plane: Any, k8s: Any, namespace: str
) -> None:
    """The ModelDeployment loop applies the rules admission applies: an object admitted
    while the webhook was off serves nothing from another namespace's folder."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "sneaky"},
        "spec": {
            "model": {"name": "digits", "version": "1", "storeUri": f"{STORE}/elsewhere"},
            "resources": {"priorityClassName": "system-node-critical"},
            "autoscaling": {"enabled": False, "intervalSeconds": 1},
        },
    }
    custom = client.CustomObjectsApi(k8s)
    with running_operator(control_plane, [namespace], name=f"nowh-md-{namespace}", webhook=False):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)

        def refused() -> dict[str, Any] | None:
            status = custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments", "sneaky"
            ).get("status") or {}
            found = condition(status, "Degraded")
            return found if found and found.get("reason") == "PolicyRefused" else None

        degraded = wait_for("Degraded: PolicyRefused", refused)
        assert "spec.model.storeUri" in degraded["message"]
        assert "spec.resources.priorityClassName" in degraded["message"]
        deployments = client.AppsV1Api(k8s).list_namespaced_deployment(namespace).items
        assert deployments == []
