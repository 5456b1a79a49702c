"""Shards read one after another, the next one's bytes fetched while this one is consumed.

On an object store each shard is one GET of the whole object (a parquet reader over a
remote file would make a ranged request per column chunk, each a round trip), started in
a background thread as soon as the previous shard's bytes have arrived, so the download
overlaps the work on the shard before it. One shard is consumed and at most one is in
flight: memory holds two shards, whatever the size of the dataset. A shard larger than
the byte budget is not held whole but streamed from the store in ranged reads. On a
local file system the kernel reads ahead already: shards are opened in place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from fsspec.implementations.local import LocalFileSystem

from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.data.readers import Chunk, chunks_of, iter_chunks

# Per shard: two of them (one consumed, one fetched) are the most held at once.
DEFAULT_MAX_BYTES = 64 << 20


def _fetch(uri: str) -> bytes:
    fs, path = artifacts.filesystem(uri)
    data: bytes = fs.cat_file(path)
    return data


def _start(pool: ThreadPoolExecutor, uri: str, size: int, max_bytes: int) -> Future[bytes] | None:
    return pool.submit(_fetch, uri) if size <= max_bytes else None


def iter_shards(
    shards: Sequence[tuple[str, int]],
    fmt: DataFormat,
    columns: list[str],
    chunk_rows: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[Iterator[Chunk]]:
    """For each (uri, size) in turn, the iterator of its chunks (see `readers.iter_chunks`).

    Each shard's chunks are to be consumed before the next shard is asked for. A consumer
    that stops early leaves at most one download running, whose bytes are then dropped.
    """
    if not shards:
        return
    fs, _ = artifacts.filesystem(shards[0][0])
    if isinstance(fs, LocalFileSystem):
        for uri, _size in shards:
            yield iter_chunks(uri, fmt, columns, chunk_rows)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelops-prefetch")
    pending = _start(pool, *shards[0], max_bytes)
    try:
        for index, (uri, _size) in enumerate(shards):
            current = pending
            data = current.result() if current is not None else None
            upcoming = shards[index + 1] if index + 1 < len(shards) else None
            pending = _start(pool, *upcoming, max_bytes) if upcoming is not None else None
            yield (
                chunks_of(data, fmt, columns, chunk_rows)
                if data is not None
                else iter_chunks(uri, fmt, columns, chunk_rows)
            )
            # The consumed shard's bytes go before the next one's are taken.
            del data, current
    finally:
        if pending is not None:
            pending.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
