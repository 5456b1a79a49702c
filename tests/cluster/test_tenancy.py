"""Two tenants on the real control plane, each a user bound only to the chart's `modelops-edit`.

The ClusterRoles are the ones the chart renders (helm template), applied as they are;
every request is made as the tenant (impersonation), so the API server's own RBAC and
aggregation decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.operator_fixture import wait_for
from tests.cluster.trainingjob_helpers import GROUP, PLURAL, VERSION, manifest
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
