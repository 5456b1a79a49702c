"""The terminal view of local mode: one table of resources and the latest events.

`modelops status` renders the same table from the state folder in another terminal.
When the run that wrote the folder is no longer live, it says so with the time the
run was last seen and leaves out the live numbers (replicas, load, latency, live
accuracy, progress): the folder keeps their last values, which nothing updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelops.local.context import Event
from modelops.local.state import Heartbeat

_KIND_SHORT = {"TrainingJob": "tj", "ModelDeployment": "md", "IncrementalUpdate": "iu"}
# The run beats once a tick (1 s); one silent this long is stuck or was killed.
STALE_AFTER_S = 15.0


def is_live(beat: Heartbeat | None, now: datetime, alive: Callable[[int], bool]) -> bool:
    if beat is None or beat.stopped:
        return False
    return (now - beat.seen).total_seconds() < STALE_AFTER_S and alive(beat.pid)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


def not_live_line(beat: Heartbeat | None, now: datetime) -> str:
    """The line `modelops status` leads with when no run is updating the folder."""
    if beat is None:
        return "modelops run is not running: last recorded state, no live numbers"
    seen = beat.seen.astimezone()
    age = _ago(max(0.0, (now - beat.seen).total_seconds()))
    how = "stopped" if beat.stopped else "not running"
    return (
        f"modelops run {how}; last seen {seen:%Y-%m-%d %H:%M:%S} ({age}): "
        "state as of then, no live numbers"
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _detail_metric(main_metric: str, shown: dict[str, Any]) -> str:
    """The headline metric, unless a column already shows it (`accuracy=0.9721`)."""
    name = main_metric.partition("=")[0]
    return "" if shown.get(name) is not None else main_metric


def row(record: dict[str, Any], live: bool = True) -> dict[str, Any]:
    """The columns of one resource record; without `live`, no live numbers."""
    kind = record.get("kind", "")
    status: dict[str, Any] = record.get("status") or {}
    out: dict[str, Any] = {
        "resource": f"{_KIND_SHORT.get(kind, kind)}/{record.get('name')}",
        "phase": status.get("phase", "Pending"),
        "version": None,
        "replicas": None,
        "rps": None,
        "p95": None,
        "accuracy": None,
        "detail": status.get("message") or "",
        "percent": None,
    }
    if kind == "TrainingJob":
        progress = status.get("progress") or {}
        out["version"] = (status.get("modelVersion") or {}).get("version")
        out["accuracy"] = (status.get("modelVersion") or {}).get("metrics", {}).get("accuracy")
        if status.get("phase") == "Running":
            out["percent"] = progress.get("percent", 0)
            out["detail"] = (
                f"epoch {progress.get('epoch', 0)}/{progress.get('totalEpochs', '?')} "
                + " ".join(
                    f"{k}={v:.3g}" for k, v in sorted((progress.get("metrics") or {}).items())
                )
            )
        elif status.get("mainMetric"):
            out["detail"] = _detail_metric(status["mainMetric"], out)
    elif kind == "ModelDeployment":
        metrics = status.get("metrics") or {}
        out["version"] = status.get("activeVersion")
        out["replicas"] = f"{status.get('readyReplicas', 0)}/{status.get('desiredReplicas', 0)}"
        out["rps"] = metrics.get("rps")
        out["p95"] = metrics.get("p95Ms")
        out["accuracy"] = metrics.get("accuracy")
        candidate = status.get("candidateVersion")
        last = (status.get("lastScale") or {}).get("reason")
        traffic = status.get("traffic") or {}
        bits = [f"candidate v{candidate} at {traffic.get('candidate', 0)}%"] if candidate else []
        out["detail"] = "; ".join([*bits, last or out["detail"]])
    elif kind == "IncrementalUpdate":
        out["version"] = status.get("promotedVersion")
        pending = status.get("pendingDelta") or {}
        out["detail"] = (
            f"pending {pending.get('newShards', 0)} new/{pending.get('changedShards', 0)} changed"
            f"; last {status.get('lastResult') or '-'}"
        )
    if not live:
        out["percent"] = None
        if kind == "ModelDeployment":
            out.update(replicas=None, rps=None, p95=None, accuracy=None)
    return out


def table(records: Iterable[dict[str, Any]], live: bool = True) -> Table:
    grid = Table(title="ModelOps (local)", expand=True)
    for name in ("resource", "phase", "version", "replicas", "rps", "p95 ms", "accuracy", "detail"):
        grid.add_column(name, overflow="fold")
    for record in records:
        r = row(record, live)
        detail: Any = Text(r["detail"])
        if r["percent"] is not None:
            detail = Group(
                ProgressBar(total=100, completed=r["percent"], width=30), Text(r["detail"])
            )
        grid.add_row(
            r["resource"],
            r["phase"],
            _fmt(r["version"]),
            _fmt(r["replicas"]),
            _fmt(r["rps"]),
            _fmt(r["p95"]),
            _fmt(r["accuracy"]),
            detail,
        )
    return grid


def render(
    records: Iterable[dict[str, Any]], events: Iterable[Event], urls: dict[str, str]
) -> Group:
    lines = [Text(f"{name} → {url}", style="bold") for name, url in urls.items()]
    recent = [Text(e.line(), style="dim") for e in list(events)[-8:]]
    return Group(table(records), *lines, *recent)


def plain_line(record: dict[str, Any], live: bool = True) -> str:
    """One line per resource, for logs and `modelops status` without a terminal."""
    r = row(record, live)
    parts = [r["resource"], r["phase"], f"v{_fmt(r['version'])}"]
    if r["replicas"] is not None:
        parts += [f"replicas={r['replicas']}", f"rps={_fmt(r['rps'])}", f"p95={_fmt(r['p95'])}ms"]
    if r["accuracy"] is not None:
        parts.append(f"accuracy={_fmt(r['accuracy'])}")
    if r["detail"]:
        parts.append(r["detail"])
    return "  ".join(parts)
