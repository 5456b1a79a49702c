"""Reading and writing model versions in a store (file:// or s3:// through fsspec).

The layout is described in `modelops.api.artifact`. The writers here write a folder;
a version becomes visible only through `modelops_runtime.publish`, which never
overwrites one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from modelops.api.artifact import ModelCard, SnapshotManifest
from modelops_runtime import bucket_check, storage

if TYPE_CHECKING:
    import torch

CARD = "model.json"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
METRICS = "metrics.json"
SNAPSHOT = "snapshot.json"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of a URI and the path inside it.

    s3:// takes its endpoint, region and retries from the environment (`storage`), and
    its bucket is checked on first use, so a misconfiguration fails naming the URI.
    """
    fs, path = fsspec.core.url_to_fs(uri, **storage.options(uri))
    bucket_check.check(fs, uri)
    return fs, str(path).rstrip("/")


def join(uri: str, *parts: str | int) -> str:
    return "/".join([uri.rstrip("/"), *(str(part).strip("/") for part in parts)])


def remove(fs: AbstractFileSystem, path: str) -> None:
    """Remove a file or folder; one already gone is fine. On an object store a delete
    retried after a lost reply, or an empty folder left by a server killed mid-delete
    (listed, yet holding nothing), would otherwise fail a run whose work is done."""
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def version_uri(store_uri: str, name: str, version: int) -> str:
    return join(store_uri, name, f"v{version}")


def list_versions(store_uri: str, name: str) -> list[int]:
    """Finished versions of a model (those with a card), ascending."""
    fs, root = filesystem(join(store_uri, name))
    if not fs.exists(root):
        return []
    found = []
    for entry in fs.ls(root, detail=False):
        match = _VERSION_DIR.match(str(entry).rstrip("/").rsplit("/", 1)[-1])
        if match and fs.exists(f"{str(entry).rstrip('/')}/{CARD}"):
            found.append(int(match.group(1)))
    return sorted(found)


def write_json(uri: str, payload: Any) -> None:
    """Write JSON whole or not at all: readers never see a truncated file.

    The text is made before anything is written; on a file system it goes to a private
    temporary name that is then renamed over the target (atomic in POSIX); an object
    store's single put is atomic already.
    """
    text = json.dumps(payload, indent=2, sort_keys=True)
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        with fs.open(path, "w") as handle:
            handle.write(text)
        return
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def read_json(uri: str) -> Any:
    fs, path = filesystem(uri)
    with fs.open(path, "r") as handle:
        return json.load(handle)


def save_weights(uri: str, tensors: dict[str, torch.Tensor]) -> None:
    # torch is imported where weights are touched: the operator lists data through this
    # module and has no torch.
    from safetensors.torch import save as save_safetensors

    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    blob = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    with fs.open(path, "wb") as handle:
        handle.write(blob)


def load_weights(uri: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors

    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        blob = handle.read()
    tensors: dict[str, torch.Tensor] = load_safetensors(blob)
    return tensors


def save_version(
    folder_uri: str,
    card: ModelCard,
    tensors: dict[str, torch.Tensor] | None,
    metrics: dict[str, float],
    snapshot: SnapshotManifest | None,
) -> None:
    """Write a version folder; the card goes last and marks it finished."""
    if tensors is not None:
        save_weights(join(folder_uri, WEIGHTS), tensors)
    write_json(join(folder_uri, METRICS), metrics)
    if snapshot is not None:
        write_json(join(folder_uri, SNAPSHOT), snapshot.model_dump(mode="json"))
    write_json(join(folder_uri, CARD), card.model_dump(mode="json"))


def load_card(folder_uri: str) -> ModelCard:
    return ModelCard.model_validate(read_json(join(folder_uri, CARD)))


def load_metrics(folder_uri: str) -> dict[str, float]:
    metrics: dict[str, float] = read_json(join(folder_uri, METRICS))
    return metrics


def load_snapshot(folder_uri: str) -> SnapshotManifest | None:
    fs, path = filesystem(join(folder_uri, SNAPSHOT))
    if not fs.exists(path):
        return None
    return SnapshotManifest.model_validate(read_json(join(folder_uri, SNAPSHOT)))
