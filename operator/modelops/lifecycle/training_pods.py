"""What the decisions of a TrainingJob know about its pods: their role and their state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from modelops.lifecycle.training_report import parse_result


class Role(StrEnum):
    HEAD = "head"
    WORKER = "worker"


@dataclass(frozen=True)
class PodView:
    """What the decisions need to know about one pod of the job."""

    name: str
    role: Role
    attempt: int
    index: int = 0
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    progress: str | None = None  # the head's progress annotation, raw
    message: str | None = None  # the main container's termination message
    exit_code: int | None = None
    reason: str | None = None  # termination reason, or the pod's own (e.g. Evicted)

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"

    def failure(self) -> str:
        """A one-line account of why this pod failed."""
        what = self.reason or "Error"
        if self.exit_code is not None:
            what += f" (exit code {self.exit_code})"
        detail = (self.message or "").strip().splitlines()
        if detail and parse_result(self.message) is None:
            what += f": {detail[-1][:300]}"
        return f"{self.role} pod {self.name} failed: {what}"


def pick_failure(failed: list[PodView]) -> str:
    """Why an attempt failed, from its failed pods: the head's account first (it runs the
    driver and sees the training error), else the lowest-numbered worker's."""
    failed.sort(key=lambda p: (p.role != Role.HEAD, p.index))
    return failed[0].failure()
