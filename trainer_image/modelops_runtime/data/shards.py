"""A dataset's shard files: listing them and fingerprinting them into a snapshot manifest.

A dataset URI is a folder (file://) or prefix (s3://) whose direct children with the
format's suffix are the shards; they are taken in path order, which fixes the shard
index every worker assignment is computed from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.data.readers import read_columns
from modelops_runtime.errors import NoData

SUFFIXES: dict[DataFormat, tuple[str, ...]] = {
    DataFormat.PARQUET: (".parquet", ".pq"),
    DataFormat.CSV: (".csv",),
}
_HASH_CHUNK = 1 << 20


def shard_uri(dataset_uri: str, shard: ShardInfo | str) -> str:
    """The URI of a shard, from its path relative to the dataset."""
    return artifacts.join(dataset_uri, shard.path if isinstance(shard, ShardInfo) else shard)


def list_shards(dataset_uri: str, fmt: DataFormat) -> list[str]:
    """Relative paths of the shard files, sorted."""
    return sorted(listed_shards(dataset_uri, fmt))


def listed_shards(dataset_uri: str, fmt: DataFormat) -> dict[str, dict[str, Any]]:
    """The shard files' listing entries (size, mtime or ETag) by relative path: one listing."""
    fs, root = artifacts.filesystem(dataset_uri)
    if not fs.isdir(root):
        raise NoData(f"dataset {dataset_uri} is not a folder")
    found: dict[str, dict[str, Any]] = {}
    for entry in fs.ls(root, detail=True):
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "file" and name.endswith(SUFFIXES[fmt]):
            found[name] = dict(entry)
    return found


def etag_of(entry: Mapping[str, Any]) -> str | None:
    """An object store's ETag from a listing entry, unquoted; None for a plain file."""
    tag = entry.get("ETag") or entry.get("etag")
    return str(tag).strip('"') if tag else None


def _count_csv_rows(newlines: int, last_byte: bytes) -> int:
    # Rows are lines after the header; a final line without its newline still counts.
    # Quoted fields spanning lines are not supported in CSV shards.
    lines = newlines + (1 if last_byte not in (b"", b"\n") else 0)
    return max(lines - 1, 0)


def fingerprint(
    dataset_uri: str, path: str, fmt: DataFormat, content_hash: bool = True
) -> ShardInfo:
    """Size, content hash and row count of one shard, reading it once in bounded chunks.

    Without `content_hash` a parquet shard is described from its footer alone (sha256
    left empty): enough to plan reading it, as evaluation does.
    """
    fs, full = artifacts.filesystem(shard_uri(dataset_uri, path))
    if fmt == DataFormat.PARQUET and not content_hash:
        with fs.open(full, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        return ShardInfo(path=path, size=int(fs.size(full)), sha256="", rows=rows)
    digest = hashlib.sha256()
    size = 0
    newlines = 0
    last = b""
    with fs.open(full, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            if content_hash:
                digest.update(chunk)
            size += len(chunk)
            if fmt == DataFormat.CSV:
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
    if fmt == DataFormat.PARQUET:
        with fs.open(full, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
    else:
        rows = _count_csv_rows(newlines, last)
    return ShardInfo(
        path=path, size=size, sha256=digest.hexdigest() if content_hash else "", rows=rows
    )


def snapshot(dataset_uri: str, fmt: DataFormat, content_hash: bool = True) -> SnapshotManifest:
    """The manifest of the dataset as it is now: every shard with its fingerprint."""
    entries = listed_shards(dataset_uri, fmt)
    paths = sorted(entries)
    if not paths:
        raise NoData(f"dataset {dataset_uri} has no {fmt.value} shards")
    # The ETag as listed lets a later scan trust a shard it lists unchanged without reading it.
    shards = [
        fingerprint(dataset_uri, path, fmt, content_hash).model_copy(
            update={"etag": etag_of(entries[path])}
        )
        for path in paths
    ]
    columns = read_columns(shard_uri(dataset_uri, paths[0]), fmt)
    return SnapshotManifest(uri=dataset_uri, format=fmt.value, shards=shards, columns=columns)


def digest(manifest: SnapshotManifest) -> str:
    """One hash over paths, sizes and content hashes: equal digests mean equal data."""
    h = hashlib.sha256()
    for shard in manifest.shards:
        h.update(f"{shard.path}\0{shard.size}\0{shard.sha256}\n".encode())
    return h.hexdigest()
