"""The best-trials table of a TrainingJob's search, as `modelops status` shows it.

It reads the record's `status.search` (trials by state, the best so far, the best few
trials) as written by `lifecycle.training_search`; records without one show nothing.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _short(path: str) -> str:
    # training.optimizer.learningRate → learningRate: the table has one line per trial.
    return path.rsplit(".", 1)[-1]


def _metrics(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in (row.get("metrics") or {}).items())


def _value(text: str) -> str:
    # Sampled floats print to 4 significant digits; integers, lists and names as they are.
    try:
        number = float(text)
    except ValueError:
        return text
    return text if number.is_integer() else f"{number:.4g}"


def _params(row: dict[str, Any]) -> str:
    return " ".join(f"{_short(k)}={_value(v)}" for k, v in (row.get("params") or {}).items())


def _search(record: dict[str, Any]) -> dict[str, Any] | None:
    if record.get("kind") != "TrainingJob":
        return None
    search = (record.get("status") or {}).get("search")
    return search if isinstance(search, dict) else None


def headline(record: dict[str, Any]) -> str | None:
    """`tj/x search: 9/16 done (6 stopped early), 2 running; best trial-3 val_accuracy=0.98`."""
    search = _search(record)
    if search is None:
        return None
    line = f"tj/{record.get('name')} search: {search.get('summary') or '-'}"
    best = search.get("best")
    if isinstance(best, dict):
        line += f"; best {best.get('id')} {_metrics(best)}".rstrip()
    return line


def plain_lines(record: dict[str, Any]) -> list[str]:
    """The headline and one indented line per best trial, for output that is not a terminal."""
    line = headline(record)
    if line is None:
        return []
    lines = [line]
    for row in (_search(record) or {}).get("top") or []:
        pareto = " pareto" if row.get("pareto") else ""
        lines.append(
            f"  {row.get('id')}  {row.get('state') or '-'}{pareto}  epoch {row.get('epoch', 0)}"
            f"  {_metrics(row)}  {_params(row)}".rstrip()
        )
    return lines


def table(record: dict[str, Any]) -> Table | None:
    """The best trials as a rich table titled with the headline; None without a search."""
    line = headline(record)
    search = _search(record)
    if line is None or search is None:
        return None
    grid = Table(title=line, expand=True)
    for name in ("trial", "state", "epoch", "metrics", "parameters"):
        grid.add_column(name, overflow="fold")
    for row in search.get("top") or []:
        state = (row.get("state") or "-") + (" (pareto)" if row.get("pareto") else "")
        grid.add_row(
            str(row.get("id")), state, str(row.get("epoch", 0)), _metrics(row), _params(row)
        )
    return grid
