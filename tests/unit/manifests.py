"""Valid base manifests and a way to break them one field at a time."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

_DELETE = object()


def load_example(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / relative).read_text())
    return document


def training_job() -> dict[str, Any]:
    return load_example("digits/trainingjob.yaml")


def model_deployment() -> dict[str, Any]:
    return load_example("digits/modeldeployment.yaml")


def incremental_update() -> dict[str, Any]:
    return load_example("digits/incrementalupdate.yaml")


def mutate(document: dict[str, Any], path: str, value: Any = _DELETE) -> dict[str, Any]:
    """A copy of `document` with the dotted `path` set to `value`, or removed."""
    out = copy.deepcopy(document)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        key: Any = int(part) if part.isdigit() and isinstance(node, list) else part
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = node[key]
    last: Any = int(parts[-1]) if parts[-1].isdigit() and isinstance(node, list) else parts[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


DELETE = _DELETE
