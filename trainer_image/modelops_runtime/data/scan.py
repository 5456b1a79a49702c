"""Listing a dataset for an IncrementalUpdate, hashing each shard once, and the scan command.

`FingerprintCache` remembers a shard's fingerprint while its listing stamp stays the same:
its size and, on an object store, its ETag (new at every write of other content), else its
modification time. A period's look at a large dataset so costs one listing plus the
reading of new or rewritten shards; an unchanged shard is not read at all, nor is the
shard the columns come from. A version's snapshot records each shard's ETag, so even a
cold cache trusts the shards the baseline version saw unchanged. The operator and
`modelops run` keep one cache for the life of the process (local mode also on disk, in its
state folder); the scan pod (`python -m modelops_runtime scan`), a new process each
period, keeps it as a JSON file in the store beside the model's versions.

The scan pod runs in the tenant's namespace with the tenant's store access, so the
operator never reads a tenant's data with its own identity; it writes only the reduced
report (`modelops.lifecycle.datascan`) as its termination message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from modelops.api.artifact import ShardInfo, SnapshotManifest
from modelops.api.training import DataFormat
from modelops.lifecycle import datascan
from modelops_runtime import artifacts
from modelops_runtime.data import shards as shard_files
from modelops_runtime.data.readers import read_columns
from modelops_runtime.data.shards import shard_uri
from modelops_runtime.errors import NoData

log = logging.getLogger(__name__)

TERMINATION_LOG = "/dev/termination-log"
Stamp = tuple[Any, str]


def _stamp(entry: Mapping[str, Any]) -> Stamp | None:
    """What says a file is unchanged without reading it: size and ETag (or mtime)."""
    marker: Any = shard_files.etag_of(entry) or entry.get("md5Hash")
    marker = marker or entry.get("mtime") or entry.get("LastModified") or entry.get("updated")
    if marker is None:
        return None
    return (entry.get("size"), str(marker))


class FingerprintCache:
    """Fingerprints by (dataset, shard), valid while the shard's stamp is unchanged; with
    the shard's columns once they were read."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], tuple[Stamp, ShardInfo, list[str] | None]] = {}
        self._lock = threading.Lock()

    def _entry(
        self, uri: str, path: str, stamp: Stamp | None
    ) -> tuple[Stamp, ShardInfo, list[str] | None] | None:
        if stamp is None:
            return None
        with self._lock:
            known = self._known.get((uri, path))
        return known if known is not None and known[0] == stamp else None

    def get(self, uri: str, path: str, stamp: Stamp | None) -> ShardInfo | None:
        known = self._entry(uri, path, stamp)
        return known[1] if known is not None else None

    def put(self, uri: str, path: str, stamp: Stamp | None, shard: ShardInfo) -> None:
        if stamp is not None:
            with self._lock:
                self._known[(uri, path)] = (stamp, shard, None)

    def columns(self, uri: str, path: str, stamp: Stamp | None) -> list[str] | None:
        known = self._entry(uri, path, stamp)
        return list(known[2]) if known is not None and known[2] is not None else None

    def put_columns(self, uri: str, path: str, stamp: Stamp | None, columns: list[str]) -> None:
        """Remember a shard's columns, while it is the shard fingerprinted under `stamp`."""
        known = self._entry(uri, path, stamp)
        if known is not None:
            with self._lock:
                self._known[(uri, path)] = (known[0], known[1], list(columns))

    def seed(self, uri: str, snapshot: SnapshotManifest) -> None:
        """Trust a stored snapshot's shards that carry an ETag, unless already known."""
        with self._lock:
            for index, shard in enumerate(snapshot.shards):
                if shard.etag:
                    # The snapshot's columns were read from its first shard.
                    columns = list(snapshot.columns) if index == 0 and snapshot.columns else None
                    entry = ((shard.size, shard.etag), shard, columns)
                    self._known.setdefault((uri, shard.path), entry)

    def keep_only(self, uri: str, paths: set[str]) -> None:
        """Forget deleted shards: the cache never outgrows the listing."""
        with self._lock:
            for key in [k for k in self._known if k[0] == uri and k[1] not in paths]:
                del self._known[key]

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = []
            for (u, p), (s, shard, columns) in sorted(self._known.items()):
                entry = {
                    "uri": u,
                    "path": p,
                    "stamp": list(s),
                    "shard": shard.model_dump(mode="json"),
                }
                if columns is not None:
                    entry["columns"] = columns
                entries.append(entry)
        return entries

    @classmethod
    def from_json(cls, entries: Any) -> FingerprintCache:
        cache = cls()
        for entry in entries if isinstance(entries, list) else []:
            try:
                uri, path = str(entry["uri"]), str(entry["path"])
                stamp = (entry["stamp"][0], str(entry["stamp"][1]))
                cache.put(uri, path, stamp, ShardInfo.model_validate(entry["shard"]))
                if isinstance(entry.get("columns"), list):
                    cache.put_columns(uri, path, stamp, [str(c) for c in entry["columns"]])
            except (KeyError, IndexError, TypeError, ValueError):
                continue  # a damaged entry is read again, never trusted
        return cache


def listing(uri: str, fmt: DataFormat, cache: FingerprintCache) -> SnapshotManifest:
    """The dataset's shards, fingerprinted (cached ones reused), and its columns."""
    return _listing(uri, fmt, cache)[0]


def _listing(
    uri: str, fmt: DataFormat, cache: FingerprintCache
) -> tuple[SnapshotManifest, dict[str, Stamp | None]]:
    try:
        entries = shard_files.listed_shards(uri, fmt)
    except NoData as error:  # reported as what it is: a missing folder
        raise FileNotFoundError(str(error)) from None
    stamps = {path: _stamp(entry) for path, entry in entries.items()}
    if not stamps:
        raise FileNotFoundError(f"dataset {uri} has no {fmt.value} shards")
    shards = []
    for path in sorted(stamps):
        shard = cache.get(uri, path, stamps[path])
        if shard is None:
            shard = shard_files.fingerprint(uri, path, fmt)
            cache.put(uri, path, stamps[path], shard)
        # The ETag as listed now: the snapshot records it even for a shard seeded without one.
        shards.append(shard.model_copy(update={"etag": shard_files.etag_of(entries[path])}))
    cache.keep_only(uri, set(stamps))
    columns = _columns(uri, fmt, cache, shards[0].path, stamps[shards[0].path])
    manifest = SnapshotManifest(uri=uri, format=fmt.value, shards=shards, columns=columns)
    return manifest, stamps


def _columns(
    uri: str, fmt: DataFormat, cache: FingerprintCache, path: str, stamp: Stamp | None
) -> list[str]:
    """A shard's columns, read once while it is unchanged."""
    columns = cache.columns(uri, path, stamp)
    if columns is None:
        columns = read_columns(shard_uri(uri, path), fmt)
        cache.put_columns(uri, path, stamp, columns)
    return columns


def stored_snapshot(store: str, model: str, version: int) -> SnapshotManifest | None:
    return artifacts.load_snapshot(artifacts.version_uri(store, model, version))


def scan(
    uri: str,
    fmt: DataFormat,
    store: str,
    model: str,
    baseline_version: int | None,
    cache: FingerprintCache,
) -> datascan.DataScan:
    """The dataset against the snapshot `baseline_version` was trained on."""
    baseline = (
        stored_snapshot(store, model, baseline_version) if baseline_version is not None else None
    )
    if baseline is not None and baseline.uri == uri:
        cache.seed(uri, baseline)
    current, stamps = _listing(uri, fmt, cache)
    return datascan.scan(
        current, baseline, uri, lambda path: _columns(uri, fmt, cache, path, stamps.get(path))
    )


# -- the command ---------------------------------------------------------------------------


def load_cache(uri: str | None) -> FingerprintCache:
    if not uri:
        return FingerprintCache()
    try:
        return FingerprintCache.from_json(artifacts.read_json(uri))
    except (OSError, ValueError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("fingerprint cache %s unreadable (%s): hashing every shard", uri, error)
        return FingerprintCache()


def save_cache(uri: str | None, cache: FingerprintCache) -> None:
    if not uri:
        return
    fs, path = artifacts.filesystem(uri)
    try:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        # Written beside and renamed over: a scan killed mid-write leaves the old cache.
        partial = f"{path}.partial-{os.getpid()}"
        with fs.open(partial, "w") as handle:
            json.dump(cache.to_json(), handle)
        fs.mv(partial, path)
    except OSError as error:  # the next scan hashes again; the report is still right
        log.warning("fingerprint cache %s not saved: %s", uri, error)


def _write_message(path: str | None, text: str) -> None:
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text[: datascan.MESSAGE_LIMIT])
    except OSError as error:
        print(f"scan: no termination message: {error}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelops_runtime scan",
        description="Compare a dataset with the snapshot a model version was trained on.",
    )
    parser.add_argument("--data", required=True, help="dataset URI (a folder of shards)")
    parser.add_argument("--format", default="parquet", choices=[f.value for f in DataFormat])
    parser.add_argument("--store", required=True, help="model store URI")
    parser.add_argument("--model", required=True, help="model name in the store")
    parser.add_argument("--baseline", type=int, help="version whose snapshot is compared with")
    parser.add_argument("--cache", help="JSON file of known fingerprints (read, then rewritten)")
    parser.add_argument("--termination-log", help="write the report here too")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    cache = load_cache(args.cache)
    try:
        result = scan(
            args.data, DataFormat(args.format), args.store, args.model, args.baseline, cache
        )
    except Exception as error:  # reported to the operator, which says so in the status
        text = datascan.encode_failure(f"listing {args.data}: {type(error).__name__}: {error}")
        print(text, flush=True)
        _write_message(args.termination_log, text)
        return 1
    save_cache(args.cache, cache)
    text = datascan.encode(result)
    print(text, flush=True)
    _write_message(args.termination_log, text)
    return 0
