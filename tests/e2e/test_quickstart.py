"""The quickstart, shortened, end to end: real Ray training, real servers, real HTTP.

One run of examples/quickstart/quickstart.py --corrupt is shared by the tests: it
trains, serves, scales under a burst, promotes an update on new shards, refuses an
update on label-shuffled shards, and is stopped with SIGINT like Ctrl-C.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart" / "quickstart.py"

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _processes_of_run(run_pid: int) -> list[str]:
    """Processes whose environment says they belong to that `modelops run`."""
    needle = f"MODELOPS_LOCAL_RUN={run_pid}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append(f"{entry.name}: {cmdline.decode(errors='replace')[:200]}")
    return found


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("quickstart")
    summary_path = root / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            str(QUICKSTART),
            "--root",
            str(root),
            "--port",
            str(_free_port()),
            "--burst-seconds",
            "12",
            "--clients",
            "12",
            "--timeout",
            "600",
            "--corrupt",
            "--summary",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    print(result.stdout[-6000:])
    print(result.stderr[-6000:], file=sys.stderr)
    assert summary_path.exists(), "the quickstart wrote no summary"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    summary["returncode"] = result.returncode
    summary["events"] = (root / "state" / "events.log").read_text()
    return summary


def test_served_accuracy_on_held_out_digits(quickstart: dict[str, Any]) -> None:
    assert quickstart["accuracy"] >= 0.95


def test_replicas_rose_under_load_and_fell_after(quickstart: dict[str, Any]) -> None:
    assert quickstart["burst_ok"] > 0 and quickstart["burst_failed"] == 0
    assert quickstart["peak_replicas"] > 1, quickstart["events"]
    assert quickstart["replicas_after"] == 1
    assert "ScaledUp" in quickstart["events"] and "ScaledDown" in quickstart["events"]


def test_update_on_new_shards_was_promoted_and_served(quickstart: dict[str, Any]) -> None:
    update = quickstart["update"]
    assert update["decision"] == "Promoted", update
    assert quickstart["final_version"] != quickstart["first_version"]
    assert quickstart["served_version"] == str(quickstart["final_version"])
    assert quickstart["final_accuracy"] >= 0.95


def test_corrupted_shards_are_rejected_and_the_old_version_keeps_serving(
    quickstart: dict[str, Any],
) -> None:
    record = quickstart["corrupt_update"]
    assert record["decision"] == "Rejected", record
    assert record["candidateMetric"] < record["currentMetric"]
    assert quickstart["corrupt_served_version"] == str(quickstart["final_version"])
    assert quickstart["corrupt_served_accuracy"] >= 0.95


def test_ctrl_c_leaves_no_process(quickstart: dict[str, Any]) -> None:
    assert quickstart["exit_code"] == 0
    assert quickstart["returncode"] == 0
    assert _processes_of_run(quickstart["run_pid"]) == []
