"""The terminal view of local mode: one table of resources and the latest events.

`modelops status` renders the same table from the state folder in another terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelops.local.context import Event

_KIND_SHORT = {"TrainingJob": "tj", "ModelDeployment": "md", "IncrementalUpdate": "iu"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def row(record: dict[str, Any]) -> dict[str, Any]:
    """The columns of one resource record from the state folder."""
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
            out["detail"] = status["mainMetric"]
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
    return out


def table(records: Iterable[dict[str, Any]]) -> Table:
    grid = Table(title="ModelOps (local)", expand=True)
    for name in ("resource", "phase", "version", "replicas", "rps", "p95 ms", "accuracy", "detail"):
        grid.add_column(name, overflow="fold")
    for record in records:
        r = row(record)
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


def plain_line(record: dict[str, Any]) -> str:
    """One line per resource, for logs and `modelops status` without a terminal."""
    r = row(record)
    parts = [r["resource"], r["phase"], f"v{_fmt(r['version'])}"]
    if r["replicas"] is not None:
        parts += [f"replicas={r['replicas']}", f"rps={_fmt(r['rps'])}", f"p95={_fmt(r['p95'])}ms"]
    if r["accuracy"] is not None:
        parts.append(f"accuracy={_fmt(r['accuracy'])}")
    if r["detail"]:
        parts.append(r["detail"])
    return "  ".join(parts)
