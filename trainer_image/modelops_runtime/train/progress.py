"""Training progress: one JSON document, rewritten atomically, that the operator reads.

The document has the fields of the API's `Progress` (camelCase: epoch, totalEpochs,
percent, metrics, samplesPerSecond, updatedAt) plus `attempt`, `jobId`, `phase`
(training, search, finished), `checkpoint` (the epoch's checkpoint folder) and, during
a search (written by the Tune driver's callback, `search_progress`):

- `trials`: one entry per started trial, `{id, params, epoch, metrics, state, pareto}`:
  `params` maps each search path to its value as JSON text, `epoch` is the last epoch
  reported, `metrics` that epoch's metrics (and `params`, the parameter count), `state`
  one of running, stoppedEarly (by the search's scheduler or the loop's own early
  stopping), finished, failed, and `pareto` whether the trial is on the Pareto front of
  the finished trials (with one objective: whether it is the best).
- `trialCounts`: `{running, stoppedEarly, finished, failed}`.
- `best`: `{trial, metrics}`, the trial the selection rule ranks first so far (among
  finished trials once there are any), with its metrics; absent before any report.

`epoch` and `totalEpochs` then count trial-epochs over the whole search. One process
writes it
(the Ray Train controller, the Tune driver, or the loop itself when run in-process);
the CLI's printer thread echoes each change to stdout as a `MODELOPS_PROGRESS <json>`
line for log scrapers, or draws a rich progress bar when stdout is a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelops.api.training import Progress

MARKER = "MODELOPS_PROGRESS "
RESULT_MARKER = "MODELOPS_RESULT "


def document(
    job_id: str,
    epoch: int,
    total_epochs: int,
    metrics: dict[str, float],
    samples_per_second: float | None = None,
    attempt: int = 0,
    phase: str = "training",
    trials: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The progress document; the `Progress` model validates the shared fields."""
    percent = int(100 * epoch / total_epochs) if total_epochs else 0
    shared = Progress(
        epoch=epoch,
        total_epochs=total_epochs,
        percent=min(100, percent),
        metrics={k: float(v) for k, v in metrics.items()},
        samples_per_second=samples_per_second,
        updated_at=datetime.now(UTC),
    ).to_dict()
    out: dict[str, Any] = {**shared, "attempt": attempt, "jobId": job_id, "phase": phase}
    if trials is not None:
        out["trials"] = trials
    out.update(extra or {})
    return out


def from_report(job_id: str, report: dict[str, Any], checkpoint_root: str | None = None) -> dict[str, Any]:
    """The document for one epoch report of the training loop.

    With `checkpoint_root`, it names the newest complete checkpoint's folder (the report's
    `checkpoint_epoch`: checkpoints are written in the background and may trail the
    epoch): the operator shows it and cannot derive it, since the folder depends on the
    run's data digest.
    """
    doc = document(
        job_id,
        epoch=int(report["epoch"]),
        total_epochs=int(report["total_epochs"]),
        metrics={k: float(v) for k, v in report.items() if k.startswith(("val_", "train_"))},
        samples_per_second=float(report["samples_per_second"]),
        attempt=int(report["attempt"]),
    )
    if checkpoint_root is not None and report.get("checkpoint_epoch"):
        doc["checkpoint"] = f"{checkpoint_root.rstrip('/')}/epoch-{int(report['checkpoint_epoch'])}"
    return doc


def write(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Replace the file atomically: a reader sees the old document or the new, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".progress-", dir=target.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, sort_keys=True)
    os.replace(temp, target)


def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            doc: dict[str, Any] = json.load(handle)
            return doc
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Printer(threading.Thread):
    """Echoes each new progress document to stdout while training runs elsewhere."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 0.1) -> None:
        super().__init__(name="progress-printer", daemon=True)
        self.path = path
        self.interval = interval
        self._halt = threading.Event()
        self._last: str | None = None
        self._bar: Any = None
        self._task: Any = None

    def run(self) -> None:
        use_bar = sys.stdout.isatty()
        if use_bar:
            from rich.progress import Progress as Bar

            self._bar = Bar()
            self._bar.start()
            self._task = self._bar.add_task("training", total=None)
        try:
            while not self._halt.wait(self.interval):
                self._poll()
            self._poll()
        finally:
            if self._bar is not None:
                self._bar.stop()

    def _poll(self) -> None:
        doc = read(self.path)
        if doc is None:
            return
        text = json.dumps(doc, sort_keys=True)
        if text == self._last:
            return
        self._last = text
        if self._bar is not None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(doc.get("metrics", {}).items()))
            self._bar.update(
                self._task,
                completed=doc.get("epoch", 0),
                total=doc.get("totalEpochs") or None,
                description=f"{doc.get('phase', 'training')} {shown}",
            )
        else:
            print(MARKER + text, flush=True)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
