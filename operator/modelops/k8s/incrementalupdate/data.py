"""How an IncrementalUpdate's data is observed: the one seam between the update and its data.

`DataSource` is all the reconcile asks of the data (a listing, the snapshot a stored
version was trained on, one shard's columns); `scan` reduces them to the `DataScan` the
plan decides on. `RuntimeData` reads the store in the operator's process.
"""

from __future__ import annotations

from typing import Protocol

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import DataFormat, DataSpec
from modelops.lifecycle.datascan import DataScan
from modelops.lifecycle.datascan import scan as reduce_scan


class DataSource(Protocol):
    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest: ...

    def stored_snapshot(self, store: str, model: str, version: int) -> SnapshotManifest | None: ...

    def columns(self, uri: str, fmt: DataFormat) -> list[str]: ...


class RuntimeData:
    """The runtime's shard listing and snapshots (its imports are heavy: taken when used).

    A shard is hashed once (`modelops_runtime.data.scan.FingerprintCache`): a period's
    listing of a large dataset costs one directory listing plus the hashing of new or
    rewritten shards.
    """

    def __init__(self) -> None:
        from modelops_runtime.data.scan import FingerprintCache

        self._cache = FingerprintCache()

    def listing(self, uri: str, fmt: DataFormat) -> SnapshotManifest:
        from modelops_runtime.data.scan import listing

        return listing(uri, fmt, self._cache)

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
