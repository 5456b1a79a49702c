"""The one way a controller writes its object's status.

The status is computed on a copy and written only when something meaningful changed,
always as a merge patch conditioned on the resourceVersion it was computed from: if the
object changed since that read, the API server refuses (409), `StatusConflict` is raised,
and the loop reconciles again on the new state instead of letting a stale decision win.

A watch can lag the operator's own last write. The writer remembers, per object, the
resourceVersion its last write was computed from; a copy still at that version has not
caught up (`is_stale`), and `read` fetches the object afresh instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelops.k8s.kube import ApiError, Kube
from modelops.k8s.metrics import OperatorMetrics
from modelops.lifecycle.events import EventNote
from modelops.lifecycle.status import status_changed, status_patch

Body = dict[str, Any]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    # Whole seconds, as Kubernetes writes its own timestamps.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Outcome:
    """What the control loop needs after a reconcile."""

    events: tuple[EventNote, ...] = ()
    requeue_after: float | None = None
    # What of the object the pass acted on (its generation): a watch event that shows
    # the same needs no other pass.
    generation: object = None


class StatusConflict(Exception):
    """The object changed between our read and our status write; reconcile again."""


class StatusWriter:
    """Writes one resource's statuses; one instance per controller (thread-safe)."""

    def __init__(self, kube: Kube, metrics: OperatorMetrics, kind: str) -> None:
        self.kube = kube
        self.metrics = metrics
        self.kind = kind
        # Per object uid: the resourceVersion our last status write was computed from.
        self._written_from: dict[str, str] = {}
        self._lock = threading.Lock()

    def forget(self, uid: str) -> None:
        with self._lock:
            self._written_from.pop(uid, None)

    def outdated(self, body: Mapping[str, Any]) -> None:
        """`body` is known to predate a write of ours (made, or refused as too late)."""
        meta = body.get("metadata") or {}
        with self._lock:
            self._written_from[str(meta.get("uid"))] = str(meta.get("resourceVersion"))

    def is_stale(self, body: Mapping[str, Any]) -> bool:
        """True when `body` predates our own last status write of the object."""
        meta = body.get("metadata") or {}
        with self._lock:
            written_from = self._written_from.get(str(meta.get("uid")))
        return written_from is not None and written_from == meta.get("resourceVersion")

    def read(self, path: str, seen: Body | None = None) -> Body | None:
        """`seen` (the watched copy) when it is current, else a fresh GET; None when gone."""
        if seen is not None and not self.is_stale(seen):
            return seen
        try:
            return self.kube.get(path)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    def read_live(self, path: str, seen: Body | None = None) -> Body | None:
        """`read`, but None also for an object being deleted: a loop leaves it alone
        (a finalizer or the garbage collector removes its children)."""
        body = self.read(path, seen)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return body

    def write(self, path: str, body: Mapping[str, Any], current: Body, desired: Body) -> bool:
        """Write `desired` if it differs from `current` (the status read with `body`, as
        this version of the operator parses it).

        The patch is computed against what `body` stores, so a field the parsed status
        only defaults is written too. Returns whether a write was made; raises
        `StatusConflict` when the object changed since `body` was read.
        """
        if not status_changed(current, desired):
            return False
        meta = body["metadata"]
        stored = dict(body.get("status") or {})
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"]},
            "status": status_patch(stored, desired),
        }
        # Whatever the outcome, the copy at this version is now known to be outdated.
        self.outdated(body)
        try:
            self.kube.merge_patch(f"{path}/status", patch)
        except ApiError as error:
            if error.conflict:
                raise StatusConflict(str(error)) from error
            raise
        self.metrics.api_writes.labels("patch", f"{self.kind}Status").inc()
        return True
