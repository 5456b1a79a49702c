"""The generated CRDs: fresh, structural, documented, and carrying the API's extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops import crdgen
from modelops.api.crd import RESOURCES, ResourceInfo, crd_manifest

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "modelops" / "crds"]
FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const"}


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _schema(info: ResourceInfo) -> dict[str, Any]:
    version = crd_manifest(info)["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crds_check_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modelops", "crds", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_crds_check_fails_on_a_stale_or_extra_file(tmp_path: Path) -> None:
    copy = tmp_path / "crds"
    shutil.copytree(ROOT / "crds", copy)
    assert crdgen.stale_files(copy) == []
    target = copy / "modelops.dev_trainingjobs.yaml"
    target.write_text(target.read_text().replace("maximum: 10000", "maximum: 10001", 1))
    (copy / "old.yaml").write_text("kind: CustomResourceDefinition\n")
    assert crdgen.stale_files(copy) == ["modelops.dev_trainingjobs.yaml", "old.yaml"]


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_copy_equals_the_generated_text(directory: Path) -> None:
    for name, text in crdgen.render().items():
        assert (directory / name).read_text() == text, f"{directory / name} is stale"


@pytest.mark.parametrize("info", RESOURCES, ids=lambda i: i.kind)
def test_schema_is_structural_and_documented(info: ResourceInfo) -> None:
    schema = _schema(info)
    for path, node in _nodes(schema):
        assert not FORBIDDEN_KEYS & set(node), f"{path} has {FORBIDDEN_KEYS & set(node)}"
        assert "type" in node, f"{path} has no type"
        assert node.get("additionalProperties") is not False, path
        if path == ".metadata":
            # The API server validates metadata itself; a CRD may only call it an object.
            assert node == {"type": "object"}
            continue
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if node["type"] == "object":
            has_shape = "properties" in node or "additionalProperties" in node
            assert has_shape, f"{path} is an untyped object"
        is_field = not path.endswith(("[]", "{}"))
        if path.startswith((".spec", ".status")) and is_field:
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("info", RESOURCES, ids=lambda i: i.kind)
def test_names_columns_and_subresources(info: ResourceInfo) -> None:
    crd = yaml.safe_load((ROOT / "crds" / f"modelops.dev_{info.plural}.yaml").read_text())
    names = crd["spec"]["names"]
    assert names["shortNames"] == list(info.short_names)
    assert "modelops" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[-1] == "Age" and len(columns) >= 4
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        node: dict[str, Any] = schema
        for part in column["jsonPath"].strip(".").split("."):
            if part in ("metadata",):
                break
            node = node["properties"][part]
        else:
            expected = {
                "integer": "integer",
                "number": "number",
                "date": "string",
                "string": "string",
            }
            assert node["type"] == expected[column["type"]], column


def test_model_deployment_has_a_scale_subresource() -> None:
    info = next(i for i in RESOURCES if i.kind == "ModelDeployment")
    version = crd_manifest(info)["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.replicas"
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"]["properties"]["replicas"]["type"] == "integer"
    assert schema["properties"]["status"]["properties"]["replicas"]["type"] == "integer"
    assert schema["properties"]["status"]["properties"]["selector"]["type"] == "string"


def test_cross_field_rules_are_in_the_schema() -> None:
    info = next(i for i in RESOURCES if i.kind == "TrainingJob")
    resources = _schema(info)["properties"]["spec"]["properties"]["resources"]
    rules = resources["x-kubernetes-validations"]
    assert any("minWorkers <= self.maxWorkers" in r["rule"] for r in rules)
    assert all(r["message"] for r in rules)
    md = _schema(next(i for i in RESOURCES if i.kind == "ModelDeployment"))
    ensemble = md["properties"]["spec"]["properties"]["ensemble"]
    assert "sum() == 100" in ensemble["x-kubernetes-validations"][0]["rule"]
    conditions = md["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"


@pytest.mark.parametrize("info", RESOURCES, ids=lambda i: i.kind)
def test_every_list_map_and_string_of_a_spec_is_bounded(info: ResourceInfo) -> None:
    """A tenant cannot make an object that costs the operator more than its bounds allow
    (huge lists, overlong strings): the API server refuses it before anyone reads it."""
    spec = _schema(info)["properties"]["spec"]
    unbounded = []
    for path, node in _nodes(spec, "spec"):
        kind = node.get("type")
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "string" and not {"maxLength", "enum", "format"} & node.keys():
            unbounded.append(path)
        if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []
