"""Names shared by the packaging pieces stay in step.

kind-config.yaml, the chart's values, the Makefile's image targets, the Dockerfiles, the
example manifests, the operator's defaults and docs/kind-quickstart.md all name the same
images, cluster, store paths, user id and resources; none of them can be run here (no
Docker), so this test is what keeps the quickstart honest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelops"
QUICKSTART = ROOT / "docs" / "kind-quickstart.md"
IMAGES_MK = ROOT / "mk" / "images.mk"
OPERATOR_DOCKERFILE = ROOT / "operator" / "Dockerfile"
RUNTIME_DOCKERFILE = ROOT / "trainer_image" / "Dockerfile"
EXAMPLES = ROOT / "examples"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _kind() -> dict[str, Any]:
    config: dict[str, Any] = _yaml(ROOT / "kind-config.yaml")
    return config


def _values() -> dict[str, Any]:
    values: dict[str, Any] = _yaml(CHART / "values.yaml")
    return values


def _chart() -> dict[str, Any]:
    chart: dict[str, Any] = _yaml(CHART / "Chart.yaml")
    return chart


def _version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


def _make(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make not found")
    proc = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _examples() -> dict[str, dict[str, Any]]:
    """`<folder>/<kind>` → manifest, for the cluster examples (quickstart/ is local mode)."""
    out = {}
    for path in sorted(EXAMPLES.glob("*/*.yaml")):
        if path.parent.name == "quickstart":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[f"{path.parent.name}/{doc['kind']}"] = doc
    return out


def _store_mount() -> str:
    """Where the kind workers mount the host's store folder."""
    mounts = {
        (m["hostPath"], m["containerPath"])
        for node in _kind()["nodes"]
        if node["role"] == "worker"
        for m in node.get("extraMounts", [])
    }
    assert len(mounts) == 1, f"every worker must mount the same store folder: {mounts}"
    ((_, container),) = mounts
    return str(container)


def _host_store() -> str:
    return str(
        next(iter(m for n in _kind()["nodes"] for m in n.get("extraMounts", [])))["hostPath"]
    )


# -- images ---------------------------------------------------------------------------------


def test_versions_agree() -> None:
    chart = _chart()
    assert chart["appVersion"] == _version() == chart["version"]
    assert f"modelops-operator:{_version()}" in _make("image-operator")


def test_make_builds_the_images_the_chart_deploys() -> None:
    values = _values()
    operator = f"{values['image']['repository']}:{_chart()['appVersion']}"
    runtime = f"{values['workloadImage']['repository']}:{_chart()['appVersion']}"
    assert values["image"]["tag"] == "" and values["workloadImage"]["tag"] == ""
    build_operator = _make("image-operator")
    assert "-f operator/Dockerfile" in build_operator and f"-t {operator}" in build_operator
    build_runtime = _make("image-runtime")
    assert "-f trainer_image/Dockerfile" in build_runtime and f"-t {runtime}" in build_runtime
    load = _make("kind-load")
    assert "--name modelops" in load and operator in load and runtime in load
    for dockerfile in (OPERATOR_DOCKERFILE, RUNTIME_DOCKERFILE):
        assert dockerfile.is_file(), f"{dockerfile.relative_to(ROOT)} is missing"


def test_the_operator_defaults_to_the_chart_workload_image() -> None:
    from modelops.k8s.config import OperatorConfig

    values = _values()
    expected = f"{values['workloadImage']['repository']}:{_chart()['appVersion']}"
    assert OperatorConfig().workload_image == expected
    assert OperatorConfig().store_uri == values["store"]["uri"]


def test_the_operator_image_matches_the_chart() -> None:
    text = OPERATOR_DOCKERFILE.read_text()
    values = _values()
    from_lines = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert from_lines and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", from_lines[0])
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["securityContext"]["runAsUser"] == 10001
    exposed = {int(p) for p in re.findall(r"^EXPOSE (.+)$", text, re.M)[0].split()}
    assert exposed == set(values["ports"].values())
    entrypoint = yaml.safe_load(re.findall(r"^ENTRYPOINT (.+)$", text, re.M)[0])
    command = yaml.safe_load(re.findall(r"^CMD (.+)$", text, re.M)[0])
    template = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"command: {json_list(entrypoint + command)}" in template
    assert "[operator]" in text


def json_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def test_workload_pods_run_as_the_image_user() -> None:
    from modelops.k8s import security

    assert _values()["podSecurityContext"]["runAsUser"] == security.RUNTIME_UID
    if RUNTIME_DOCKERFILE.is_file():
        text = RUNTIME_DOCKERFILE.read_text()
        assert re.search(r"^USER 10001(:10001)?$", text, re.M), "trainer_image/Dockerfile user"


# -- kind, store paths and examples ---------------------------------------------------------


def test_kind_cluster_name() -> None:
    name = _kind()["name"]
    assert name == "modelops"
    assert re.search(rf"^KIND_CLUSTER \?= {name}$", IMAGES_MK.read_text(), re.M)
    text = QUICKSTART.read_text()
    assert "kind create cluster --config kind-config.yaml" in text
    assert f"kind delete cluster --name {name}" in text


def test_store_paths_line_up() -> None:
    from modelops.k8s.modeldeployment import builders as md
    from modelops.k8s.trainingjob import builders as tj

    mount = _store_mount()
    assert tj.STORE_MOUNT == md.STORE_MOUNT == mount
    assert _values()["store"]["uri"].startswith(f"file://{mount}/")
    uris = [
        uri
        for manifest in _examples().values()
        for uri in _uris(manifest)
        if uri.startswith("file://")
    ]
    assert uris
    for uri in uris:
        assert uri.startswith(f"file://{mount}/"), uri


def _uris(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [
            u
            for k, v in node.items()
            for u in ([v] if isinstance(v, str) and k.lower().endswith("uri") else _uris(v))
        ]
    if isinstance(node, list):
        return [u for item in node for u in _uris(item)]
    return []


def test_quickstart_writes_the_data_the_examples_read() -> None:
    text = QUICKSTART.read_text()
    host, mount = _host_store(), _store_mount()
    written = [
        (name, path.replace(host, mount, 1))
        for name, path in re.findall(r"python -m modelops_runtime datasets (\w+) (\S+)", text)
    ]
    assert written
    for folder, kind in (("digits", "TrainingJob"), ("forecast", "TrainingJob")):
        data_uri = _examples()[f"{folder}/{kind}"]["spec"]["data"]["uri"].removeprefix("file://")
        assert any(data_uri.startswith(path) for _, path in written), data_uri
    holdouts = [
        uri.removeprefix("file://")
        for key, manifest in _examples().items()
        if key.startswith("digits/")
        for uri in _uris(manifest)
        if "holdout" in uri
    ]
    for uri in holdouts:
        assert any(uri.startswith(path) for name, path in written if name == "digits"), uri


def test_quickstart_store_volume() -> None:
    text = QUICKSTART.read_text()
    blocks = [
        d for b in re.findall(r"```yaml\n(.*?)```", text, re.S) for d in yaml.safe_load_all(b)
    ]
    volume = next(d for d in blocks if d["kind"] == "PersistentVolume")
    claim = next(d for d in blocks if d["kind"] == "PersistentVolumeClaim")
    assert volume["spec"]["hostPath"]["path"] == _store_mount()
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"]
    assert f"--set store.persistentVolumeClaim={claim['metadata']['name']}" in text
    namespaces = {m["metadata"].get("namespace", "default") for m in _examples().values()}
    assert namespaces == {claim["metadata"]["namespace"]}, "the claim lives with the examples"


def test_node_pools_named_in_the_quickstart_exist() -> None:
    pools = {
        node.get("labels", {}).get("modelops.dev/pool")
        for node in _kind()["nodes"]
        if node["role"] == "worker"
    }
    for pool in re.findall(r"modelops\.dev/pool[=:] ?(\w+)", QUICKSTART.read_text()):
        assert pool in pools, pool


def test_make_targets_named_in_the_docs_exist() -> None:
    docs = QUICKSTART.read_text() + (ROOT / "docs" / "operations.md").read_text()
    targets = set(re.findall(r"\bmake ([a-z][a-z-]+)", docs))
    assert {"images", "kind-load", "kind-install", "kind-up", "kind-down"} <= targets
    for target in targets:
        _make(target)


def test_quickstart_names_match_the_release_and_examples() -> None:
    text = QUICKSTART.read_text()
    mk = IMAGES_MK.read_text()
    namespace = re.search(r"^CHART_NAMESPACE \?= (\S+)$", mk, re.M)
    assert namespace is not None
    install = _make("kind-install")
    assert (
        f"helm upgrade --install modelops charts/modelops --namespace {namespace.group(1)}"
        in install
    )
    assert f"kubectl -n {namespace.group(1)} rollout status deployment/modelops" in text
    examples = _examples()
    tj, md, iu = (
        examples[f"digits/{k}"] for k in ("TrainingJob", "ModelDeployment", "IncrementalUpdate")
    )
    assert md["spec"]["model"]["name"] == tj["spec"]["output"]["modelName"]
    assert iu["spec"]["trainingJobRef"]["name"] == tj["metadata"]["name"]
    assert iu["spec"]["deploymentRef"]["name"] == md["metadata"]["name"]
    assert f"tj/{tj['metadata']['name']}" in text
    assert f"md {md['metadata']['name']}" in text and f"svc/{md['metadata']['name']}" in text
    assert f"iu {iu['metadata']['name']}" in text
    assert f"/v2/models/{md['spec']['model']['name']}/infer" in text
    # Each namespace's versions have their own folder of the store (the default layout).
    tenant = tj["metadata"].get("namespace", "default")
    model = tj["spec"]["output"]["modelName"]
    assert f"{_host_store()}/models/{tenant}/{model}/" in text
