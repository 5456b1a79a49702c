"""The local state folder: resource statuses and the model registry, as JSON files.

`modelops status` reads the same files from another terminal, and re-running
`modelops run` resumes from them (a Succeeded TrainingJob is not trained again).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        json.dump(payload, out, indent=2, sort_keys=True, default=str)
    os.replace(temp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


@dataclass(frozen=True)
class Heartbeat:
    """The last sign of life of `modelops run`: its pid, when, and whether it stopped."""

    pid: int
    seen: datetime
    stopped: bool = False


class StateStore:
    """Statuses of resources by kind and name, plus promotions per model."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.resources = root / "resources"
        self.registry_path = root / "registry.json"
        self.processes_path = root / "processes.json"
        self.heartbeat_path = root / "heartbeat.json"
        self.resources.mkdir(parents=True, exist_ok=True)

    def status_path(self, kind: str, name: str) -> Path:
        return self.resources / f"{kind}.{name}.json"

    def load_status(self, kind: str, name: str) -> dict[str, Any] | None:
        record = read_json(self.status_path(kind, name))
        return record.get("status") if isinstance(record, dict) else None

    def save_status(
        self, kind: str, name: str, spec: dict[str, Any], status: dict[str, Any]
    ) -> None:
        write_json_atomic(
            self.status_path(kind, name),
            {"kind": kind, "name": name, "spec": spec, "status": status},
        )

    def all_records(self) -> list[dict[str, Any]]:
        records = [read_json(p) for p in sorted(self.resources.glob("*.json"))]
        return [r for r in records if isinstance(r, dict)]

    def promotions(self, model: str) -> list[int]:
        """Promoted versions of a model, oldest first."""
        registry = read_json(self.registry_path, {})
        versions = registry.get(model, [])
        return [int(v) for v in versions]

    def promote(self, model: str, version: int) -> None:
        registry = read_json(self.registry_path, {})
        versions = [int(v) for v in registry.get(model, []) if int(v) != version]
        registry[model] = [*versions, version]
        write_json_atomic(self.registry_path, registry)

    def rejected(self, model: str) -> list[int]:
        """Versions a rollout rolled back; `latest` skips them."""
        registry = read_json(self.registry_path, {})
        return [int(v) for v in registry.get(f"{model}:rejected", [])]

    def reject(self, model: str, version: int) -> None:
        registry = read_json(self.registry_path, {})
        key = f"{model}:rejected"
        registry[key] = sorted({*[int(v) for v in registry.get(key, [])], version})
        write_json_atomic(self.registry_path, registry)

    def record_processes(self, pids: dict[str, int]) -> None:
        write_json_atomic(self.processes_path, pids)

    def recorded_processes(self) -> dict[str, int]:
        pids = read_json(self.processes_path, {})
        return {str(k): int(v) for k, v in pids.items()} if isinstance(pids, dict) else {}

    def beat(self, heartbeat: Heartbeat) -> None:
        write_json_atomic(
            self.heartbeat_path,
            {
                "pid": heartbeat.pid,
                "seen": heartbeat.seen.isoformat(),
                "stopped": heartbeat.stopped,
            },
        )

    def last_beat(self) -> Heartbeat | None:
        """None when no run wrote one (a folder from an older version, or never run)."""
        beat = read_json(self.heartbeat_path)
        try:
            return Heartbeat(
                int(beat["pid"]), datetime.fromisoformat(beat["seen"]), bool(beat["stopped"])
            )
        except (TypeError, KeyError, ValueError):
            return None
