"""An IncrementalUpdate's data on S3 (the real SeaweedFS server): new and changed objects are
found from the listing (size and ETag) and only they are read; the snapshot records each
shard's ETag; local mode keeps its fingerprints across intervals and restarts.

Bytes are counted at a real HTTP proxy in front of the server (`tests/runtime/s3_proxy.py`),
so what is measured is what crossed the wire, not what the code under test says it read.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import DataFormat, TrainingJob
from modelops.api.update import IncrementalUpdate
from modelops.api.validation import parse_resource
from modelops_runtime import artifacts
from modelops_runtime.data import scan as data_scan
from modelops_runtime.data import shards as shard_files
from tests.runtime.s3_helpers import BUCKET, fresh_prefix, key_of
from tests.runtime.s3_proxy import S3Proxy

pytestmark = pytest.mark.runtime

PARQUET = DataFormat.PARQUET


def shard_bytes(seed: int, rows: int = 200) -> bytes:
    """A parquet shard whose size depends only on `rows`: plain fixed-width columns."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {"f0": rng.random(rows), "f1": rng.random(rows), "target": rng.integers(0, 2, rows)}
    )
    out = io.BytesIO()
    pq.write_table(table, out, compression="none", use_dictionary=False)
    return out.getvalue()


_clients: dict[str, Any] = {}


def _client(server: Any) -> Any:
    """One plain botocore client per server: making one costs about a second."""
    if server.endpoint not in _clients:
        _clients[server.endpoint] = server.client()
    return _clients[server.endpoint]


def put(server: Any, uri: str, body: bytes) -> None:
    _client(server).put_object(Bucket=BUCKET, Key=key_of(uri), Body=body)


def etag(server: Any, uri: str) -> str:
    return str(_client(server).head_object(Bucket=BUCKET, Key=key_of(uri))["ETag"]).strip('"')


@pytest.fixture
def proxied(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Proxy]:
    """The runtime talks to the server through a counting proxy; the test's own client does not."""
    proxy = S3Proxy(s3.endpoint).start()
    monkeypatch.setenv("MODELOPS_S3_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    proxy.stop()


def data_path(uri: str) -> str:
    return f"/{BUCKET}/{key_of(uri)}"


def listings_of(proxy: S3Proxy, uri: str) -> int:
    prefix = key_of(uri).rstrip("/") + "/"
    return len(
        [
            s
            for s in proxy.seen
            if s.method == "GET"
            and "list-type=2" in s.query
            and f"prefix={prefix}".replace("/", "%2F") in s.query
        ]
    )


def test_a_scan_reads_only_the_new_and_the_overwritten_object(s3: Any, proxied: S3Proxy) -> None:
    root = fresh_prefix("incremental")
    data, store = f"{root}/data", f"{root}/models"
    for i in range(4):
        put(s3, f"{data}/part-{i}.parquet", shard_bytes(i))
    # The version's snapshot, as training writes it: each shard with its ETag as listed.
    baseline = shard_files.snapshot(data, PARQUET)
    assert [s.etag for s in baseline.shards] == [
        etag(s3, f"{data}/part-{i}.parquet") for i in range(4)
    ]
    artifacts.write_json(
        f"{artifacts.version_uri(store, 'm', 1)}/snapshot.json", baseline.model_dump(mode="json")
    )

    put(s3, f"{data}/part-4.parquet", shard_bytes(4))  # a new object
    rewritten = shard_bytes(11)  # same size, other content, in the same second as likely as not
    assert len(rewritten) == baseline.shards[1].size and rewritten != shard_bytes(1)
    put(s3, f"{data}/part-1.parquet", rewritten)

    proxied.reset()
    # A scan pod without a cache file: the snapshot's ETags stand in for it.
    cache = data_scan.FingerprintCache()
    found = data_scan.scan(data, PARQUET, store, "m", 1, cache)
    read = proxied.bytes_under(data_path(data))
    assert (found.delta.new_shards, found.delta.changed_shards, found.delta.deleted_shards) == (
        1,
        1,
        0,
    )
    assert found.delta.new_rows == 400 and found.shards == 5 and found.rows == 1000
    assert set(read) == {"part-1.parquet", "part-4.parquet"}, read
    print(
        f"bytes read by the scan: {sum(read.values())} for 2 objects of {2 * len(rewritten)} bytes "
        f"(a dataset of {5 * len(rewritten)})"
    )

    # The next period, nothing changed: one listing, no object read at all.
    proxied.reset()
    again = data_scan.scan(data, PARQUET, store, "m", 1, cache)
    assert again.delta == found.delta and listings_of(proxied, data) >= 1
    assert proxied.bytes_under(data_path(data)) == {}
    # The listing the delta came from records what the server says each object is now.
    current = data_scan.listing(data, PARQUET, cache)
    assert [s.etag for s in current.shards] == [
        etag(s3, f"{data}/part-{i}.parquet") for i in range(5)
    ]


def _resources(data: str, store: str) -> tuple[TrainingJob, IncrementalUpdate]:
    recipe, problems = parse_resource(
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "recipe"},
            "spec": {
                "model": {"architecture": "mlp", "task": "classification", "hiddenLayers": [8]},
                "data": {"uri": data, "label": "target"},
                "training": {"epochs": 1},
                "output": {"modelName": "m", "storeUri": store},
            },
        }
    )
    update, more = parse_resource(
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "IncrementalUpdate",
            "metadata": {"name": "fresh"},
            "spec": {
                "trainingJobRef": {"name": "recipe"},
                "detect": {"intervalSeconds": 5, "minNewShards": 1},
            },
        }
    )
    assert not problems and not more, problems + more
    assert isinstance(recipe, TrainingJob) and isinstance(update, IncrementalUpdate)
    return recipe, update


def test_local_mode_reads_no_unchanged_shard_at_later_intervals_or_after_a_restart(
    s3: Any, proxied: S3Proxy, tmp_path: Path
) -> None:
    from modelops.local.context import LocalContext
    from modelops.local.processes import Supervisor
    from modelops.local.state import StateStore
    from modelops.local.updating import LocalUpdate

    root = fresh_prefix("local-update")
    data, store = f"{root}/data", f"{root}/models"
    for i in range(3):
        put(s3, f"{data}/part-{i}.parquet", shard_bytes(i))
    # A version from before snapshots carried ETags: the first interval must hash every shard.
    old = shard_files.snapshot(data, PARQUET)
    old = SnapshotManifest.model_validate(
        {**old.model_dump(), "shards": [{**s.model_dump(), "etag": None} for s in old.shards]}
    )
    artifacts.write_json(
        f"{artifacts.version_uri(store, 'm', 1)}/snapshot.json", old.model_dump(mode="json")
    )
    recipe, update = _resources(data, store)

    def context() -> LocalContext:
        ctx = LocalContext(
            root=tmp_path,
            state=StateStore(tmp_path / "state"),
            supervisor=Supervisor(tmp_path / "logs", f"test-{time.time_ns()}"),
        )
        ctx.state.promote("m", 1)
        return ctx

    async def interval(local: LocalUpdate) -> dict[str, int]:
        proxied.reset()
        local.last_check = None  # the interval has passed
        await local.tick()
        assert local.last_check is not None and local.run is None, local.status
        assert listings_of(proxied, data) >= 1  # the data was looked at
        return proxied.bytes_under(data_path(data))

    local = LocalUpdate(update, recipe, context())
    first = asyncio.run(interval(local))
    assert set(first) == {f"part-{i}.parquet" for i in range(3)}, first
    assert asyncio.run(interval(local)) == {}
    assert local.status.last_snapshot is not None and local.status.last_snapshot.shards == 3
    # `modelops run` started again: the fingerprints come back from its state folder.
    restarted = LocalUpdate(update, recipe, context())
    assert asyncio.run(interval(restarted)) == {}
    assert (tmp_path / "state" / "fingerprints" / "fresh.json").is_file()
