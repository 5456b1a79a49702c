"""Fixtures for tests against a real control plane (etcd, kube-apiserver, controllers, kwok).

One control plane is started per test session (see tests/controlplane/cluster.py).  Tests get:

- ``control_plane``: the session's :class:`ControlPlane` (``kubeconfig``, ``api_url``,
  ``api_client()``, ``kubectl()``, ``helm()``, ``log_tails()``);
- ``k8s``: a fresh ``kubernetes.client.ApiClient`` per test (closed afterwards);
- ``namespace``: a fresh namespace per test (deleted afterwards).

Other cluster tests reuse the same machinery through :func:`load_controlplane`, which returns
the ``cluster`` module (one instance per interpreter, so one control plane per session).
On a test failure the tail of every component's log is attached to the report.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CONTROLPLANE_PY = Path(__file__).resolve().parents[1] / "controlplane" / "cluster.py"
MODULE_NAME = "modelops_controlplane"


def load_controlplane() -> ModuleType:
    """Import tests/controlplane/cluster.py once per interpreter under a unique name."""
    module = sys.modules.get(MODULE_NAME)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(MODULE_NAME, CONTROLPLANE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


controlplane = load_controlplane()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Any]:
    """The session's control plane (started on first use, stopped at session end)."""
    yield from controlplane.session_control_plane()


@pytest.fixture
def k8s(control_plane: Any) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` for the session's control plane."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(control_plane: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    base = request.node.name.lower().replace("_", "-")
    name = "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-")
    name = f"{name}-{uuid.uuid4().hex[:6]}"
    control_plane.rest.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    controlplane.poll_until(
        f"ServiceAccount default in {name}",
        lambda: control_plane.rest.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=30,
    )
    try:
        yield name
    finally:
        control_plane.rest.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cp = controlplane.active_control_plane()
    if report.failed and cp is not None:
        report.sections.append(
            (f"control plane logs ({cp.log_dir})", cp.log_tails(lines=25) or "(no logs)")
        )
    return report


# -- the real node ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_node(control_plane: Any) -> Any:
    """The session's real node (kubelet + containerd), with both images of the project loaded.

    The images are built from the Dockerfiles by tools/images.py (cached by content hash) and
    pulled into the node's containerd through the node's loopback registry (both cached), so
    a code change moves one small layer. The node stops with the control plane.
    """
    node = control_plane.real_node()
    controlplane.load_project_images(node)
    return node
