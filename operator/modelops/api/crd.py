"""CustomResourceDefinitions generated from the pydantic models.

pydantic emits JSON Schema 2020-12; the API server wants a structural OpenAPI v3
schema. The conversion inlines references, folds `X | None` into `X`, drops
titles and `additionalProperties: false` (unknown fields are pruned, and rejected
by strict field validation), and rewrites draft-2020 exclusive bounds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from modelops.api.base import GROUP, VERSION
from modelops.api.deployment import ModelDeployment
from modelops.api.training import TrainingJob
from modelops.api.update import IncrementalUpdate

Schema = dict[str, Any]

# Lists whose items are keyed by a field: server-side apply merges them per key.
_LIST_MAP_KEYS = {"conditions": "type"}


@dataclass(frozen=True)
class ResourceInfo:
    """Names and columns of one custom resource."""

    model: type[BaseModel]
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...]
    scale: dict[str, str] | None = None
    categories: tuple[str, ...] = field(default=("modelops",))

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


_AGE = _column("Age", ".metadata.creationTimestamp", "date")

RESOURCES: tuple[ResourceInfo, ...] = (
    ResourceInfo(
        model=TrainingJob,
        kind="TrainingJob",
        plural="trainingjobs",
        singular="trainingjob",
        short_names=("tj",),
        printer_columns=(
            _column("Phase", ".status.phase"),
            _column("Progress", ".status.progress.percent", "integer", description="Percent."),
            _column("Model", ".spec.output.modelName"),
            _column("Version", ".status.modelVersion.version", "integer"),
            _column("Metric", ".status.mainMetric"),
            _column("Trials", ".status.search.summary", priority=1),
            _AGE,
        ),
    ),
    ResourceInfo(
        model=ModelDeployment,
        kind="ModelDeployment",
        plural="modeldeployments",
        singular="modeldeployment",
        short_names=("md",),
        printer_columns=(
            _column("Model", ".spec.model.name"),
            _column("Version", ".status.activeVersion", "integer"),
            _column("Candidate", ".status.candidateVersion", "integer"),
            _column("Traffic", ".status.traffic.candidate", "integer", description="Percent."),
            _column("Ready", ".status.readyReplicas", "integer"),
            _column("Desired", ".status.desiredReplicas", "integer"),
            _column("RPS", ".status.metrics.rps", "number"),
            _column("P95-ms", ".status.metrics.p95Ms", "number"),
            _column("Phase", ".status.phase"),
            _AGE,
        ),
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    ),
    ResourceInfo(
        model=IncrementalUpdate,
        kind="IncrementalUpdate",
        plural="incrementalupdates",
        singular="incrementalupdate",
        short_names=("iu",),
        printer_columns=(
            _column("Phase", ".status.phase"),
            _column("Promoted", ".status.promotedVersion", "integer"),
            _column("Pending-shards", ".status.pendingDelta.newShards", "integer"),
            _column("Last", ".status.lastResult"),
            _AGE,
        ),
    ),
)

RESOURCES_BY_KIND = {info.kind: info for info in RESOURCES}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # siblings such as description override the referenced schema
        node = target
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_resolve(inner, defs), **node}
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Any, name: str = "") -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        options = [opt for opt in node.pop("anyOf") if opt.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"{name}: unions other than 'X | None' are not structural")
        node = {**options[0], **node}
    node.pop("title", None)
    if node.get("default", 0) is None:
        node.pop("default")
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if node.get("format") == "date-time":
        node["type"] = "string"
    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {prop: _structural(sub, prop) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, name)
        else:
            out[key] = value
    if out.get("type") == "array" and name in _LIST_MAP_KEYS:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = [_LIST_MAP_KEYS[name]]
    return out


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of one resource."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _structural(_resolve(raw, defs))
    properties = schema["properties"]
    # The API server owns metadata's schema; a CRD may only say it is an object.
    properties["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        properties[key] = {"type": "string", "description": properties[key]["description"]}
    schema["required"] = ["spec"]
    return schema


def crd_manifest(info: ResourceInfo) -> Schema:
    """The CustomResourceDefinition of one resource."""
    subresources: Schema = {"status": {}}
    if info.scale:
        subresources["scale"] = dict(info.scale)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "modelops"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(info.model)},
                    "subresources": subresources,
                    "additionalPrinterColumns": [dict(c) for c in info.printer_columns],
                }
            ],
        },
    }


def all_crds() -> dict[str, Schema]:
    """File name → CRD manifest, for every resource."""
    return {f"{GROUP}_{info.plural}.yaml": crd_manifest(info) for info in RESOURCES}
