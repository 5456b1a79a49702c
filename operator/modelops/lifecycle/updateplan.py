"""The terms of `plan_update`: what an adapter observed, the plan it gets back, and the
draft status a plan is computed on (a copy of the stored one; never the stored one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelops.api.update import (
    IncrementalUpdateSpec,
    IncrementalUpdateStatus,
    RunRecord,
    UpdatePhase,
)
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.datascan import DataScan
from modelops.lifecycle.events import EventNote

READY = "Ready"
UPDATING = "Updating"
LAST_RUN_PROMOTED = "LastRunPromoted"
DEGRADED = "Degraded"

# A write the next pass depends on (a run recorded, a candidate noted): come back at
# once, so the child is created right after its record is stored.
NEXT_PASS = 0.0
DELETING_RETRY_SECONDS = 2.0

Decision = Literal["Promoted", "Rejected", "Failed"]
Child = Literal["TrainingJob", "Evaluation"]


@dataclass(frozen=True)
class Comparison:
    """Each version's metrics on the same data: the evaluation's result."""

    candidate: dict[str, float]
    current: dict[str, float] | None


@dataclass(frozen=True)
class Evaluation:
    """Where the evaluation stands: a result, a failure, or neither yet."""

    result: Comparison | None = None
    failure: str | None = None


@dataclass(frozen=True)
class RunChild:
    """The run's TrainingJob as observed."""

    phase: str | None = None
    message: str | None = None
    version: int | None = None  # the model version it produced
    foreign: bool = False  # the name is taken by an object this update does not own
    deleting: bool = False


@dataclass(frozen=True)
class Blocked:
    """The update cannot be read as it is (invalid spec, recipe missing or invalid)."""

    status: IncrementalUpdateStatus
    now: datetime
    generation: int | None
    reason: str
    message: str
    interval: float | None  # when to look again; None without a readable spec


@dataclass(frozen=True)
class Observed:
    """Everything one decision needs, read by the adapter before it decides.

    `scan` and `scan_error` stay None until the plan asks for the data (`scan_due`):
    listing the data is the one expensive read, done only when a check is due.
    `evaluation` is None while the run's evaluation does not exist.
    """

    name: str  # the update's
    spec: IncrementalUpdateSpec
    status: IncrementalUpdateStatus
    now: datetime
    generation: int | None
    model: str
    evaluation_name: str  # what the current run's evaluation is called, once it exists
    serving: int | None  # the newest promoted version of the model
    last_check: datetime | None
    child: RunChild | None = None
    evaluation: Evaluation | None = None
    scan: DataScan | None = None
    scan_error: str | None = None


@dataclass(frozen=True)
class UpdatePlan:
    """What to do: the status to store, the events to post after it, at most one child."""

    status: IncrementalUpdateStatus
    events: tuple[EventNote, ...] = ()
    requeue_after: float | None = None
    create: Child | None = None  # the current run's next child
    scan_due: bool = False  # scan the data and plan again with the scan
    scan_baseline: int | None = None  # the version whose snapshot the scan compares with
    prune: bool = False  # a run finished: children past the history may go
    promoted: int | None = None  # the version the gate let through in this plan


@dataclass
class Draft:
    """The status being computed (a copy of the stored one) and the events it explains."""

    status: IncrementalUpdateStatus
    now: datetime
    generation: int | None
    history_limit: int = 20
    events: list[EventNote] = field(default_factory=list)
    prune: bool = False
    promoted: int | None = None

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions, type_, ok, reason, message[:32768], self.now, self.generation
        )

    def say(self, type_: str, reason: str, message: str) -> None:
        self.events.append(EventNote(type_, reason, message[:1024]))

    def not_ready(self, reason: str, message: str) -> None:
        """Ready False; a Warning event only when the reason or message is new."""
        previous = next((c for c in self.status.conditions if c.type == READY), None)
        if previous is None or (previous.reason, previous.message) != (reason, message):
            self.say("Warning", reason, message)
        self.condition(READY, False, reason, message)

    def plan(self, requeue: float | None, **extra: Any) -> UpdatePlan:
        return UpdatePlan(
            status=self.status,
            events=tuple(self.events),
            requeue_after=requeue,
            prune=self.prune,
            promoted=self.promoted,
            **extra,
        )

    def finish(
        self,
        decision: Decision,
        reason: str,
        *,
        version: int | None = None,
        candidate_metric: float | None = None,
        current_metric: float | None = None,
        cause: str | None = None,
    ) -> None:
        """Record the run in the history, in the same status write that clears it."""
        status = self.status
        run = status.current_run
        assert run is not None
        record = RunRecord(
            training_job=run.training_job,
            version=version or run.candidate_version,
            delta=run.delta,
            current_version=run.base_version,
            candidate_metric=candidate_metric,
            current_metric=current_metric,
            decision=decision,
            reason=reason[:2048],
            finished_at=self.now,
            snapshot_digest=run.snapshot_digest,
        )
        status.history = [*status.history, record][-self.history_limit :]
        status.current_run = None
        status.last_result = decision
        status.phase = UpdatePhase.IDLE
        self.condition(UPDATING, False, "Idle", f"{run.training_job} finished: {decision}")
        self.condition(LAST_RUN_PROMOTED, decision == "Promoted", decision, reason)
        if decision == "Failed":
            self.condition(DEGRADED, True, cause or "RunFailed", reason)
        else:
            self.condition(DEGRADED, False, "LastRunCompleted", f"{run.training_job}: {decision}")
        self.say("Normal" if decision == "Promoted" else "Warning", decision, reason)
        self.prune = True
