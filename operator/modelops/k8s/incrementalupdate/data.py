"""How an IncrementalUpdate's data is observed: the one seam between the update and its data.

`DataSource` is all the reconcile asks of the data (a listing, the snapshot a stored
version was trained on, one shard's columns); `scan` reduces them to the `DataScan` the
plan decides on. `RuntimeData` reads the store in the operator's process.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import DataFormat, DataSpec
from modelops.lifecycle.datascan import DataScan
from modelops.lifecycle.datascan import scan as reduce_scan


class DataSource(Protocol):
    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest: ...

    def stored_snapshot(self, store: str, model: str, version: int) -> SnapshotManifest | None: ...

    def columns(self, uri: str, fmt: DataFormat) -> list[str]: ...


Stamp = tuple[Any, Any]


def _stamp(entry: Mapping[str, Any]) -> Stamp | None:
    """What says a file is unchanged without reading it: size and mtime (or ETag)."""
    marker = entry.get("mtime") or entry.get("LastModified") or entry.get("ETag")
    marker = marker or entry.get("etag") or entry.get("md5Hash") or entry.get("updated")
    if marker is None:
        return None
    return (entry.get("size"), str(marker))


class RuntimeData:
    """The runtime's shard listing and snapshots (its imports are heavy: taken when used).

    A shard is hashed once: later listings reuse its fingerprint while its size and
    modification time (or ETag) stay the same, so a period's listing of a large dataset
    costs one directory listing plus the hashing of new or rewritten shards.
    """

    def __init__(self) -> None:
        self._fingerprints: dict[tuple[str, str], tuple[Stamp, Any]] = {}
        self._lock = threading.Lock()

    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest:
        from modelops_runtime import artifacts
        from modelops_runtime.data.readers import read_columns
        from modelops_runtime.data.shards import SUFFIXES, fingerprint, shard_uri

        fs, root = artifacts.filesystem(uri)
        if not fs.isdir(root):
            raise FileNotFoundError(f"dataset {uri} is not a folder")
        stamps: dict[str, Stamp | None] = {}
        for entry in fs.ls(root, detail=True):
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if entry.get("type") == "file" and name.endswith(SUFFIXES[fmt]):
                stamps[name] = _stamp(entry)
        if not stamps:
            raise FileNotFoundError(f"dataset {uri} has no {fmt.value} shards")
        shards = []
        for path in sorted(stamps):
            stamp, key = stamps[path], (uri, path)
            with self._lock:
                known = self._fingerprints.get(key)
            if stamp is not None and known is not None and known[0] == stamp:
                shards.append(known[1])
                continue
            shard = fingerprint(uri, path, fmt)
            shards.append(shard)
            if stamp is not None:
                with self._lock:
                    self._fingerprints[key] = (stamp, shard)
        with self._lock:  # forget deleted shards: the cache never outgrows the listing
            for key in [k for k in self._fingerprints if k[0] == uri and k[1] not in stamps]:
                del self._fingerprints[key]
        columns = read_columns(shard_uri(uri, shards[0].path), fmt)
        return SnapshotManifest(uri=uri, format=fmt.value, shards=shards, columns=columns)

    def stored_snapshot(self, store: str, model: str, version: int) -> SnapshotManifest | None:
        from modelops_runtime import artifacts

        snapshot: SnapshotManifest | None = artifacts.load_snapshot(
            artifacts.version_uri(store, model, version)
        )
        return snapshot

    def columns(self, uri: str, fmt: DataFormat) -> list[str]:
        from modelops_runtime.data.readers import read_columns

        columns: list[str] = read_columns(uri, fmt)
        return columns


def scan(
    source: DataSource, data: DataSpec, store: str, model: str, serving: int | None
) -> DataScan:
    """The data now, against the snapshot the serving version was trained on.

    Raises whatever the source raises (a missing folder, an unreachable store).
    """
    listing = source.listing(data.uri, data.format)
    baseline = source.stored_snapshot(store, model, serving) if serving is not None else None
    root = data.uri.rstrip("/")
    return reduce_scan(
        listing, baseline, data.uri, lambda path: source.columns(f"{root}/{path}", data.format)
    )
