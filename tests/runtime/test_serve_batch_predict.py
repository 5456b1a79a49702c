"""Batch prediction as a real process: killed part-way, rerun, it skips the finished
shards (their files are not rewritten) and completes with correct predictions."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelops.api.training import DataFormat
from modelops_runtime import artifacts
from modelops_runtime.batch_predict import main, run
from modelops_runtime.predictor import load_predictor
from tests.runtime.serve_helpers import CLASSES, save_classifier, write_feature_shards

pytestmark = pytest.mark.runtime

SHARDS = 10
ROWS = 2000


def _command(store: str, source: Path, target: Path, fmt: str, batch: int) -> list[str]:
    return [sys.executable, "-m", "modelops_runtime", "predict-batch", "--store", store, "--model", "m",
            "--version", "1", "--input", f"file://{source}", "--output", f"file://{target}",
            "--format", fmt, "--batch-size", str(batch), "--keep-columns", "id"]


def _check_outputs(store: str, target: Path, data: dict[str, np.ndarray]) -> None:
    predictor = load_predictor(artifacts.version_uri(store, "m", 1))
    for name, x in data.items():
        table = pq.read_table(target / f"{name}.parquet")
        assert table.num_rows == len(x)
        np.testing.assert_array_equal(table["row"].to_numpy(), np.arange(len(x)))
        np.testing.assert_array_equal(table["prediction"].to_numpy(), predictor.predict(x))
        assert table["label"].to_pylist() == [CLASSES[i] for i in predictor.predict(x)]
        probabilities = np.stack(table["probabilities"].to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(probabilities, predictor.scores(x), rtol=1e-5, atol=1e-6)
        assert table["id"].to_numpy()[0] == int(name[-4:]) * len(x)
    assert not [p for p in target.iterdir() if ".tmp-" in p.name]


def test_batch_prediction_resumes_after_a_kill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = f"file://{tmp_path / 'store'}"
    save_classifier(store, "m", 1, hidden=[512, 512])  # slow enough to be killed part-way
    data = write_feature_shards(tmp_path / "in", "parquet", SHARDS, ROWS)
    target = tmp_path / "out"
    command = _command(store, tmp_path / "in", target, "parquet", batch=100)
    log = open(tmp_path / "first.log", "wb")  # noqa: SIM115 - closed below
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    done = 0
    while done < 3 and first.poll() is None and time.monotonic() < deadline:
        progress_file = target / "_progress.json"
        if progress_file.exists():
            with contextlib.suppress(ValueError, KeyError):  # mid-rename: read again
                done = json.loads(progress_file.read_text())["shards_done"]
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    log.close()
    finished = {p.name: p.stat().st_mtime_ns for p in target.glob("part-*.parquet")}
    assert 3 <= len(finished) < SHARDS, (len(finished), (tmp_path / "first.log").read_text()[-2000:])

    # the rerun in this process: the kill above is what needs a real process
    with caplog.at_level(logging.INFO, logger="modelops_runtime.batch_predict"):
        progress = run(store, "m", "1", f"file://{tmp_path / 'in'}", f"file://{target}", DataFormat.PARQUET,
                       100, ["id"])
    assert progress == json.loads((target / "_progress.json").read_text())
    assert progress["phase"] == "Succeeded"
    assert progress["shards_done"] == SHARDS
    assert progress["shards_skipped"] == len(finished)
    assert progress["rows"] == (SHARDS - len(finished)) * ROWS
    assert caplog.text.count("already done, skipped") == len(finished)
    for name, mtime in finished.items():  # the shards done before the kill were not rewritten
        assert (target / name).stat().st_mtime_ns == mtime
    _check_outputs(store, target, data)


def test_batch_prediction_reads_csv(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    save_classifier(store, "m", 1)
    data = write_feature_shards(tmp_path / "in", "csv", 2, 700)
    target = tmp_path / "out"
    message = tmp_path / "termination-log"
    command = [*_command(store, tmp_path / "in", target, "csv", batch=256)[4:], "--termination-log", str(message)]
    assert main(command) == 0
    _check_outputs(store, target, data)
    # The counts the operator copies into status, without reading the output folder.
    assert json.loads(message.read_text()) == {
        "version": 1, "shards_total": 2, "shards_done": 2, "shards_skipped": 0, "rows": 1400,
    }


def test_a_new_version_rewrites_the_outputs_an_earlier_version_left(tmp_path: Path) -> None:
    """A rerun skips only what this same version wrote: v2's Job must not report v1's rows."""
    store = f"file://{tmp_path / 'store'}"
    save_classifier(store, "m", 1, seed=1)
    save_classifier(store, "m", 2, seed=2)
    data = write_feature_shards(tmp_path / "in", "parquet", 2, 300)
    target = tmp_path / "out"
    source = f"file://{tmp_path / 'in'}"
    first = run(store, "m", "1", source, f"file://{target}", DataFormat.PARQUET, 100, [])
    assert (first["shards_done"], first["shards_skipped"]) == (2, 0)
    again = run(store, "m", "1", source, f"file://{target}", DataFormat.PARQUET, 100, [])
    assert again["shards_skipped"] == 2  # the same version: nothing to redo
    second = run(store, "m", "2", source, f"file://{target}", DataFormat.PARQUET, 100, [])
    assert (second["shards_done"], second["shards_skipped"], second["rows"]) == (2, 0, 600)
    v2 = load_predictor(artifacts.version_uri(store, "m", 2))
    for name, x in data.items():
        table = pq.read_table(target / f"{name}.parquet")
        np.testing.assert_array_equal(table["prediction"].to_numpy(), v2.predict(x))
        assert table.schema.metadata[b"modelops.version"] == b"2"


def test_only_stale_temporaries_are_cleared(tmp_path: Path) -> None:
    """A concurrent Job's shard in the making survives; a killed run's leftover goes."""
    store = f"file://{tmp_path / 'store'}"
    save_classifier(store, "m", 1)
    write_feature_shards(tmp_path / "in", "parquet", 1, 50)
    target = tmp_path / "out"
    target.mkdir()
    live = target / ".part-0009.parquet.tmp-job-b-0f0f"  # another Job, writing now
    stale = target / ".part-0008.parquet.tmp-job-c-1e1e"  # a Job killed an hour ago
    own = target / ".part-0000.parquet.tmp-job-a-2d2d"  # this Job's killed attempt
    for path in (live, stale, own):
        path.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    source = f"file://{tmp_path / 'in'}"
    run(store, "m", "1", source, f"file://{target}", DataFormat.PARQUET, 100, [], run_id="job-a")
    assert live.exists() and not stale.exists() and not own.exists()
    assert sorted(p.name for p in target.iterdir() if ".tmp-" in p.name) == [live.name]
