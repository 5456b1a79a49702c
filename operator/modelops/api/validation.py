"""One validation for manifests, shared by `modelops validate`, the reconcilers and admission."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelops.api.base import API_VERSION
from modelops.api.crd import RESOURCES_BY_KIND


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located by its field path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{error['msg']}, got {error['input']!r}"
    return str(error["msg"])


def problems_from_error(error: ValidationError, prefix: Iterable[str | int] = ()) -> list[Problem]:
    """Turn pydantic's errors into field-path problems, the way a user reads them."""
    problems = []
    for item in error.errors():
        loc = [*prefix, *item["loc"]]
        ctx = item.get("ctx") or {}
        if item["type"] == "cel_rule" and ctx.get("field"):
            loc.append(ctx["field"])
        problems.append(Problem(_format_path(loc) or "(document)", _message(item)))
    return problems


def parse_resource(document: Any) -> tuple[BaseModel | None, list[Problem]]:
    """Validate one decoded manifest; returns the typed resource or its problems."""
    if not isinstance(document, dict):
        return None, [Problem("(document)", "a manifest must be a mapping")]
    kind = document.get("kind")
    info = RESOURCES_BY_KIND.get(kind) if isinstance(kind, str) else None
    if info is None:
        known = ", ".join(sorted(RESOURCES_BY_KIND))
        return None, [Problem("kind", f"unknown kind {kind!r}; expected one of {known}")]
    if document.get("apiVersion") != API_VERSION:
        got = document.get("apiVersion")
        return None, [Problem("apiVersion", f"must be {API_VERSION}, got {got!r}")]
    try:
        return info.model.model_validate(document), []
    except ValidationError as error:
        return None, problems_from_error(error)


def validate_spec(kind: str, spec: Any) -> list[Problem]:
    """Validate just a spec, as admission sees it; paths start at `spec`."""
    info = RESOURCES_BY_KIND[kind]
    spec_model = info.model.model_fields["spec"].annotation
    assert isinstance(spec_model, type) and issubclass(spec_model, BaseModel)
    try:
        spec_model.model_validate(spec)
    except ValidationError as error:
        return problems_from_error(error, ("spec",))
    return []


def manifest_files(paths: Sequence[str]) -> list[Path]:
    """The YAML files named, with folders expanded recursively in path order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def iter_documents(text: str) -> Iterator[Any]:
    """The non-empty YAML documents of a file."""
    for document in yaml.safe_load_all(text):
        if document is not None:
            yield document


def validate_text(text: str) -> list[Problem]:
    """All problems of every document in a YAML text, prefixed by document index when several."""
    try:
        documents = list(iter_documents(text))
    except yaml.YAMLError as error:
        return [Problem("(document)", f"not valid YAML: {error}")]
    if not documents:
        return [Problem("(document)", "no manifest found")]
    problems: list[Problem] = []
    for index, document in enumerate(documents):
        _, found = parse_resource(document)
        if len(documents) > 1:
            found = [Problem(f"[{index}].{p.path}", p.message) for p in found]
        problems.extend(found)
    return problems
