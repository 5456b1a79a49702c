"""`python -m modelops_runtime predict-batch`: one model version over a dataset's shards.

Each input shard (parquet or CSV) is streamed in row batches (memory is bounded by
the batch, never the shard) and becomes one parquet shard of predictions with
the same stem. A shard is written to a hidden temporary name and renamed into
place when complete, so an output shard either exists whole or not at all. Each
output names, in its parquet metadata, the model, version and input shard it was
predicted from: a restarted run skips the shards this same version already wrote
and only recomputes the one it was killed in, while a run of another version (or
over another input) rewrites them. Progress goes to `<output>/_progress.json` (the fields of the
ModelDeployment's BatchPredictionStatus) and to the log, one line per shard.

Output columns: `row` (index within the input shard), any `--keep-columns`,
`prediction` (class index or value) and, for classifiers, `label` (class name,
when the card has them) and `probabilities`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
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
# A temporary untouched for this long belongs to a killed run; a younger one may be a
# concurrent Job's shard in the making, and is left alone.
STALE_TEMPORARY_SECONDS = 600


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


def origin(model: str, version: int, shard_uri: str) -> dict[bytes, bytes]:
    """What an output shard was predicted from, kept in its parquet metadata."""
    return {b"modelops.model": model.encode(), b"modelops.version": str(version).encode(),
            b"modelops.input": shard_uri.encode()}


def written_from(target_uri: str) -> dict[bytes, bytes]:
    """The origin an existing output shard records; {} when it records none or is unreadable."""
    fs, path = artifacts.filesystem(target_uri)
    try:
        with fs.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).schema_arrow.metadata or {}
    except (OSError, pa.ArrowException):
        return {}
    return {k: v for k, v in metadata.items() if k.startswith(b"modelops.")}


def predict_shard(
    predictor: Predictor, shard_uri: str, fmt: DataFormat, target_uri: str, batch_size: int, keep: list[str],
    stamp: dict[bytes, bytes] | None = None,
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
                if stamp:
                    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stamp})
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

    def __init__(self, output_uri: str, model: str, version: int, total: int, run_id: str) -> None:
        self.uri = artifacts.join(output_uri, PROGRESS)
        self.run_id = run_id
        self.state: dict[str, Any] = {
            "phase": "Running", "model": model, "version": version, "output_uri": output_uri,
            "shards_total": total, "shards_done": 0, "shards_skipped": 0, "rows": 0, "current": None,
        }

    def update(self, **changes: Any) -> None:
        self.state.update(changes, updated_at=datetime.now(UTC).isoformat())
        text = json.dumps(self.state, indent=2, sort_keys=True)
        fs, path = artifacts.filesystem(self.uri)
        temporary = temporary_name(path, self.run_id)
        with fs.open(temporary, "w") as handle:
            handle.write(text)
        fs.mv(temporary, path)


def temporary_name(path: str, run_id: str) -> str:
    """A private name beside `path`, marked with the run that writes it."""
    return f"{path}{_TEMP_MARK}{run_id}-{uuid.uuid4().hex}"


def _clear_temporaries(output_uri: str, run_id: str, now: float | None = None) -> None:
    """Remove what a killed attempt of this run left half-written, and anything stale;
    another run's fresh temporaries (a concurrent Job's shard in the making) stay."""
    fs, root = artifacts.filesystem(output_uri)
    now = time.time() if now is None else now
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:  # an object store has no empty folders: nothing written yet
        return
    for entry in entries:
        name = str(entry["name"]).rsplit("/", 1)[-1]
        if _TEMP_MARK not in name:
            continue
        if f"{_TEMP_MARK}{run_id}-" in name:
            fs.rm(str(entry["name"]))
            continue
        modified = entry.get("mtime") or entry.get("LastModified")
        if isinstance(modified, datetime):
            modified = modified.timestamp()
        if modified is None or now - float(modified) > STALE_TEMPORARY_SECONDS:
            fs.rm(str(entry["name"]))


def run(
    store: str, model: str, version: str, input_uri: str, output_uri: str,
    fmt: DataFormat, batch_size: int, keep: list[str], run_id: str = "local",
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
    _clear_temporaries(output_uri, run_id)
    progress = Progress(output_uri, model, number, len(shards), run_id)
    progress.update()
    done = skipped = rows = 0
    for index, shard in enumerate(shards, 1):
        name = output_name(shard)
        target = artifacts.join(output_uri, name)
        source = artifacts.join(input_uri, shard)
        stamp = origin(model, number, source)
        if fs.exists(artifacts.filesystem(target)[1]) and written_from(target) == stamp:
            done, skipped = done + 1, skipped + 1
            log.info("shard %d/%d %s: already done, skipped", index, len(shards), shard)
            continue
        progress.update(current=shard)
        started = time.perf_counter()
        temporary = temporary_name(artifacts.join(output_uri, f".{name}"), run_id)
        count = predict_shard(predictor, source, fmt, temporary, batch_size, keep, stamp)
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
    parser.add_argument("--run-id", default="local",
                        help="Names this run's temporaries: a restarted attempt clears its own, never "
                             "another run's (the operator passes the Job's name).")
    parser.add_argument("--termination-log",
                        help="Also write the final counts here (/dev/termination-log in a pod).")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    keep = [c for c in args.keep_columns.split(",") if c]
    state = run(args.store, args.model, args.version, args.input, args.output,
                DataFormat(args.format), args.batch_size, keep, args.run_id)
    log.info("done: %d shards (%d skipped), %d rows predicted", state["shards_done"],
             state["shards_skipped"], state["rows"])
    if args.termination_log:
        # What the operator reports in status: it never reads the tenant's output folder.
        keys = ("version", "shards_total", "shards_done", "shards_skipped", "rows")
        with open(args.termination_log, "w", encoding="utf-8") as handle:
            json.dump({key: state[key] for key in keys}, handle)
    return 0
