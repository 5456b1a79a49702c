"""`python -m modelops_runtime scan`: the report a scan pod leaves, on real parquet shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from modelops.lifecycle import datascan


def _shard(path: Path, rows: int, columns: tuple[str, ...] = ("x", "target")) -> None:
    pq.write_table(pa.table({c: list(range(rows)) for c in columns}), path)


def _scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelops_runtime", "scan", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_scan_command_reports_the_delta_and_reuses_its_fingerprints(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _shard(data / "part-0.parquet", 5)
    _shard(data / "part-1.parquet", 7)
    store = tmp_path / "store"
    message = tmp_path / "termination-log"
    cache = store / "digits" / ".scan-digits.json"
    common = [
        "--data", f"file://{data}", "--store", f"file://{store}", "--model", "digits",
        "--cache", f"file://{cache}", "--termination-log", str(message),
    ]  # fmt: skip
    first = _scan(*common)
    assert first.returncode == 0, first.stderr
    parsed = datascan.parse(message.read_text())
    assert parsed is not None and parsed.scan is not None, message.read_text()
    assert (parsed.scan.shards, parsed.scan.rows, parsed.scan.delta.new_shards) == (2, 12, 2)
    known = json.loads(cache.read_text())
    assert sorted(e["path"] for e in known) == ["part-0.parquet", "part-1.parquet"]

    # A shard rewritten in place, with a new mtime and size, is hashed again; the cache
    # entry of the untouched one is what the second scan reuses (its stamp still matches).
    _shard(data / "part-1.parquet", 9)
    os.utime(data / "part-1.parquet", (1, 1))
    _shard(data / "part-2.parquet", 3, ("x", "label"))
    second = _scan(*common)
    assert second.returncode == 0, second.stderr
    again = datascan.parse(message.read_text())
    assert again is not None and again.scan is not None
    assert (again.scan.shards, again.scan.rows) == (3, 17)
    assert again.scan.digest != parsed.scan.digest
    # Against no baseline every shard is new; the first with other columns is named.
    assert again.scan.schema_problem is not None and "part-2.parquet" in again.scan.schema_problem
    entries = {e["path"]: e for e in json.loads(cache.read_text())}
    assert entries["part-1.parquet"]["shard"]["rows"] == 9
    assert entries["part-0.parquet"] == {e["path"]: e for e in known}["part-0.parquet"]


def test_a_missing_dataset_is_reported_in_the_message_and_the_exit_status(tmp_path: Path) -> None:
    message = tmp_path / "termination-log"
    result = _scan(
        "--data", f"file://{tmp_path}/nowhere", "--store", f"file://{tmp_path}/store",
        "--model", "m", "--baseline", "2", "--termination-log", str(message),
    )  # fmt: skip
    assert result.returncode == 1
    parsed = datascan.parse(message.read_text())
    assert parsed is not None and parsed.scan is None
    assert parsed.error is not None and "nowhere" in parsed.error and "FileNotFoundError" in parsed.error


def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _shard(data / "a.parquet", 4)
    cache = tmp_path / "cache.json"
    cache.write_text('[{"uri": 1}, "junk"]')
    message = tmp_path / "termination-log"
    result = _scan(
        "--data", f"file://{data}", "--store", f"file://{tmp_path}/store", "--model", "m",
        "--cache", f"file://{cache}", "--termination-log", str(message),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [e["path"] for e in json.loads(cache.read_text())] == ["a.parquet"]
