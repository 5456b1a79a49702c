"""`python -m modelops_runtime predict-batch`: one model version over a dataset's shards.

Each input shard (parquet or CSV) is streamed in row batches (memory is bounded by
the batch, never the shard) and becomes one parquet shard of predictions with
the same stem. A shard is written to a hidden temporary name and renamed into
place when complete, so an output shard either exists whole or not at all; a
restarted run skips every shard whose output exists, and only recomputes the one
it was killed in. Progress goes to `<output>/_progress.json` (the fields of the
ModelDeployment's BatchPredictionStatus) and to the log, one line per shard.

Output columns: `row` (index within the input shard), any `--keep-columns`,
`prediction` (class index or value) and, for classifiers, `label` (class name,
when the card has them) and `probabilities`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.data.readers import iter_chunks
from modelops_runtime.data.shards import list_shards
from modelops_runtime.predictor import Predictor, load_predictor

log = logging.getLogger("modelops_runtime.batch_predict")

PROGRESS = "_progress.json"
_TEMP_MARK = ".tmp-"


def output_name(shard: str) -> str:
    return shard.rsplit(".", 1)[0] + ".parquet"


def _rows(chunks: Iterator[dict[str, np.ndarray]], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Re-cut reader chunks (CSV blocks are sized in bytes) into batches of batch_size rows."""
    pending: list[dict[str, np.ndarray]] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(next(iter(chunk.values())))
        while held >= batch_size:
            merged = {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
            yield {k: v[:batch_size] for k, v in merged.items()}
            rest = {k: v[batch_size:] for k, v in merged.items()}
            held -= batch_size
            pending = [rest] if held else []
    if held:
        yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}


def _table(predictor: Predictor, batch: dict[str, np.ndarray], start: int, keep: list[str]) -> pa.Table:
    card = predictor.card
    features = np.column_stack([batch[name].astype(np.float32, copy=False) for name in card.features])
    scores = predictor.scores(features)
    predictions = predictor.decide(scores)
    columns: dict[str, Any] = {"row": np.arange(start, start + len(features), dtype=np.int64)}
    columns.update({name: batch[name] for name in keep})
    if predictor.is_classifier:
        columns["prediction"] = predictions.astype(np.int64)
        if card.classes:
            columns["label"] = pa.array(np.asarray(card.classes, dtype=object)[predictions])
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
            pa.array(scores.astype(np.float32).ravel()), scores.shape[1]
        )
    elif scores.shape[1] == 1:
        columns["prediction"] = scores[:, 0]
    else:
        columns["prediction"] = pa.FixedSizeListArray.from_arrays(pa.array(scores.ravel()), scores.shape[1])
    return pa.table(columns)


def predict_shard(
    predictor: Predictor, shard_uri: str, fmt: DataFormat, target_uri: str, batch_size: int, keep: list[str]
) -> int:
    """Write the predictions of one shard to target_uri; returns its rows."""
    fs, path = artifacts.filesystem(target_uri)
    wanted = list(dict.fromkeys([*predictor.card.features, *keep]))
    rows = 0
    writer: pq.ParquetWriter | None = None
    with fs.open(path, "wb") as handle:
        try:
            for batch in _rows(iter_chunks(shard_uri, fmt, wanted, batch_size), batch_size):
                table = _table(predictor, batch, rows, keep)
                if writer is None:
                    writer = pq.ParquetWriter(handle, table.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


class Progress:
    """`_progress.json`, rewritten atomically after each shard."""

    def __init__(self, output_uri: str, model: str, version: int, total: int) -> None:
        self.uri = artifacts.join(output_uri, PROGRESS)
        self.state: dict[str, Any] = {
            "phase": "Running", "model": model, "version": version, "output_uri": output_uri,
            "shards_total": total, "shards_done": 0, "shards_skipped": 0, "rows": 0, "current": None,
        }

    def update(self, **changes: Any) -> None:
        self.state.update(changes, updated_at=datetime.now(UTC).isoformat())
        temporary = f"{self.uri}{_TEMP_MARK}{os.getpid()}"
        artifacts.write_json(temporary, self.state)
        fs, path = artifacts.filesystem(self.uri)
        fs.mv(artifacts.filesystem(temporary)[1], path)


def _clear_temporaries(output_uri: str) -> None:
    """Remove half-written shards of a run that was killed."""
    fs, root = artifacts.filesystem(output_uri)
    for entry in fs.ls(root, detail=False):
        if _TEMP_MARK in str(entry).rsplit("/", 1)[-1]:
            fs.rm(str(entry))


def run(
    store: str, model: str, version: str, input_uri: str, output_uri: str,
    fmt: DataFormat, batch_size: int, keep: list[str],
) -> dict[str, Any]:
    """Predict every shard not done yet; returns the final progress state."""
    number = int(version) if version.isdigit() else max(artifacts.list_versions(store, model), default=0)
    if number < 1:
        raise SystemExit(f"model '{model}' has no version '{version}' in {store}")
    predictor = load_predictor(artifacts.version_uri(store, model, number))
    if not predictor.card.features or predictor.card.window:
        raise SystemExit("batch prediction needs a tabular model whose card lists its feature columns")
    shards = list_shards(input_uri, fmt)
    fs, root = artifacts.filesystem(output_uri)
    fs.makedirs(root, exist_ok=True)
    _clear_temporaries(output_uri)
    progress = Progress(output_uri, model, number, len(shards))
    progress.update()
    done = skipped = rows = 0
    for index, shard in enumerate(shards, 1):
        name = output_name(shard)
        target = artifacts.join(output_uri, name)
        if fs.exists(artifacts.filesystem(target)[1]):
            done, skipped = done + 1, skipped + 1
            log.info("shard %d/%d %s: already done, skipped", index, len(shards), shard)
            continue
        progress.update(current=shard)
        started = time.perf_counter()
        temporary = artifacts.join(output_uri, f".{name}{_TEMP_MARK}{os.getpid()}")
        count = predict_shard(predictor, artifacts.join(input_uri, shard), fmt, temporary, batch_size, keep)
        fs.mv(artifacts.filesystem(temporary)[1], artifacts.filesystem(target)[1])  # atomic publish
        done, rows = done + 1, rows + count
        progress.update(shards_done=done, shards_skipped=skipped, rows=rows, current=None)
        log.info("shard %d/%d %s: %d rows in %.2fs", index, len(shards), shard, count,
                 time.perf_counter() - started)
    progress.update(phase="Succeeded", shards_done=done, shards_skipped=skipped, rows=rows)
    return progress.state


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelops_runtime predict-batch",
                                     description="Predict a dataset's shards with one model version.")
    parser.add_argument("--store", required=True, help="Artifact store URI.")
    parser.add_argument("--model", required=True, help="Model name.")
    parser.add_argument("--version", default="latest", help="Version number, or latest.")
    parser.add_argument("--input", required=True, help="Folder of input shards.")
    parser.add_argument("--output", required=True, help="Folder for prediction shards.")
    parser.add_argument("--format", choices=[f.value for f in DataFormat], default="parquet")
    parser.add_argument("--batch-size", type=int, default=1024, help="Rows per forward pass.")
    parser.add_argument("--keep-columns", default="", help="Input columns copied to the output.")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    keep = [c for c in args.keep_columns.split(",") if c]
    state = run(args.store, args.model, args.version, args.input, args.output,
                DataFormat(args.format), args.batch_size, keep)
    log.info("done: %d shards (%d skipped), %d rows predicted", state["shards_done"],
             state["shards_skipped"], state["rows"])
    return 0
