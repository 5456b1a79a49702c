"""Streaming readers: a shard's selected columns in chunks, never the whole file at once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from modelops.api.training import DataFormat
from modelops_runtime import artifacts

Chunk = dict[str, np.ndarray]


def read_columns(uri: str, fmt: DataFormat) -> list[str]:
    """Column names of a shard, from the parquet footer or the CSV header."""
    fs, path = artifacts.filesystem(uri)
    with fs.open(path, "rb") as handle:
        if fmt == DataFormat.PARQUET:
            return list(pq.ParquetFile(handle).schema_arrow.names)
        reader = pacsv.open_csv(handle)
        return list(reader.schema.names)


def _to_numpy(batch: pa.RecordBatch, columns: list[str]) -> Chunk:
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in columns}


def iter_chunks(uri: str, fmt: DataFormat, columns: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of about `chunk_rows` rows (parquet) or one read block (CSV), in file order."""
    fs, path = artifacts.filesystem(uri)
    with fs.open(path, "rb") as handle:
        yield from chunks_of(handle, fmt, columns, chunk_rows)


def chunks_of(source: Any, fmt: DataFormat, columns: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """`iter_chunks` over an open file, or a shard's bytes already in memory."""
    if isinstance(source, bytes):
        source = pa.BufferReader(source)
    if fmt == DataFormat.PARQUET:
        parquet = pq.ParquetFile(source)
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
            yield _to_numpy(batch, columns)
        return
    # A CSV block of ~1 MiB bounds memory the way a row group does for parquet.
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=1 << 20),
        convert_options=pacsv.ConvertOptions(include_columns=columns),
    )
    for batch in reader:
        if batch.num_rows:
            yield _to_numpy(batch, columns)
