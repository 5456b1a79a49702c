"""What every local controller shares: paths, the state store, the process supervisor."""

from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from modelops.local.processes import Supervisor
from modelops.local.rayhead import RayHead
from modelops.local.state import StateStore

# The examples keep data and models under this root; local mode maps it to --root.
CLUSTER_ROOT = "file:///var/lib/modelops"


def rewrite_root(document: Any, root: Path) -> Any:
    """Point the examples' cluster paths at the local root folder."""
    if isinstance(document, dict):
        return {k: rewrite_root(v, root) for k, v in document.items()}
    if isinstance(document, list):
        return [rewrite_root(v, root) for v in document]
    if isinstance(document, str) and document.startswith(CLUSTER_ROOT):
        return f"file://{root.resolve()}{document[len(CLUSTER_ROOT) :]}"
    return document


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Event:
    time: datetime
    resource: str
    reason: str
    message: str

    def line(self) -> str:
        return f"{self.time:%H:%M:%S} {self.resource}: {self.reason}: {self.message}"


@dataclass
class LocalContext:
    """Shared by the controllers of one `modelops run`."""

    root: Path
    state: StateStore
    supervisor: Supervisor
    host: str = "127.0.0.1"
    python: str = sys.executable
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=200))
    event_log: Path | None = None
    # The run's one Ray, for the jobs that need one (see `rayhead`); None: each job starts its own.
    ray: RayHead | None = None

    def event(self, resource: str, reason: str, message: str) -> None:
        """Record an event, like a Kubernetes Event: shown live and kept in events.log."""
        event = Event(now(), resource, reason, message)
        self.events.append(event)
        if self.event_log is not None:
            with self.event_log.open("a") as out:
                out.write(event.line() + "\n")

    def write_manifest(self, name: str, document: dict[str, Any]) -> Path:
        path = self.state.root / "manifests" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def runtime(self, *args: str) -> list[str]:
        """argv of a runtime command run by this Python."""
        return [self.python, "-m", "modelops_runtime", *args]
