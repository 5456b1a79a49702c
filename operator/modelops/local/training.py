"""A TrainingJob in local mode: the runtime's `train` command as a child process.

Jobs that need Ray (several workers or a search) join the run's one Ray head, started
with the first of them; the others run their loop in the child process itself.

The job id is fixed per job. The runtime scopes checkpoints by job, spec and data, so a
retry or a rerun of `modelops run` resumes the last epoch checkpoint only when neither
the spec nor the data changed; a rerun of an unchanged job that already published its
version reports that version. Version numbers come from the store (never from the state
folder), so runs sharing a store cannot take the same number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from modelops.api.base import Condition
from modelops.api.training import (
    Attempt,
    ModelVersionRef,
    Progress,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingPhase,
    TrialResult,
)
from modelops.lifecycle.conditions import set_condition
from modelops.lifecycle.lineage import describe
from modelops.lifecycle.placement import needs_ray
from modelops.lifecycle.training_search import search_status
from modelops.local.context import LocalContext, now
from modelops.local.state import read_json

KIND = "TrainingJob"
RESULT_MARKER = "MODELOPS_RESULT "
# Ray's forwarded lines start with a colour code and "(actor pid=…)".
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Exit codes of the runtime's train command that retrying cannot fix.
_PERMANENT = {2: "InvalidSpec", 3: "NoNewData"}


def main_metric(metrics: dict[str, float]) -> str | None:
    for name in ("accuracy", "skill", "r2", "mse", "val_accuracy", "val_loss"):
        if name in metrics:
            return f"{name}={metrics[name]:.4f}"
    return None


def last_error_line(log: Path) -> str:
    """The last meaningful line a failed run printed, for the status message."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        line = _ANSI.sub("", line).strip()
        if line and not line.startswith(("MODELOPS_PROGRESS", "(", "[")):
            return line[:1000]
    return "exited without output"


def read_result(log: Path) -> dict[str, Any] | None:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            return result
    return None


class LocalTraining:
    """Runs one TrainingJob to Succeeded or Failed, retrying up to its backoff limit."""

    def __init__(self, job: TrainingJob, ctx: LocalContext) -> None:
        self.job = job
        self.ctx = ctx
        self.name = job.metadata.name
        self.process_name = f"train-{self.name}"
        stored = ctx.state.load_status(KIND, self.name)
        self.status = TrainingJobStatus.model_validate(stored) if stored else TrainingJobStatus()
        self.progress_path = ctx.state.root / "progress" / f"{self.name}.json"

    @property
    def resource(self) -> str:
        return f"tj/{self.name}"

    @property
    def finished(self) -> bool:
        return self.status.phase in (TrainingPhase.SUCCEEDED, TrainingPhase.FAILED)

    def _local_manifest(self) -> dict[str, Any]:
        """The manifest with workers capped to this machine's CPUs."""
        document = self.job.to_dict()
        document.pop("status", None)
        resources = document["spec"].setdefault("resources", {})
        workers = max(1, min(int(resources.get("workers", 1)), self.ctx.cpus))
        resources.update(workers=workers, cpusPerWorker="1", gpusPerWorker=0)
        for key in ("minWorkers", "maxWorkers"):
            if key in resources:
                resources[key] = min(int(resources[key]), workers)
        return document

    def _set(self, phase: TrainingPhase, reason: str, message: str) -> None:
        if phase != self.status.phase:
            self.ctx.event(self.resource, reason, message)
        ready = phase == TrainingPhase.SUCCEEDED
        conditions: list[Condition] = set_condition(
            self.status.conditions, "Ready", ready, reason, message, now(), 1
        )
        if phase == TrainingPhase.FAILED:
            conditions = set_condition(conditions, "Failed", True, reason, message, now(), 1)
        self.status = self.status.model_copy(
            update={"phase": phase, "message": message, "conditions": conditions}
        )

    def _ray_address(self, document: dict[str, Any]) -> tuple[bool, list[str], dict[str, str]]:
        """(ready to start, extra arguments, environment): the shared head, when the job needs Ray."""
        if self.ctx.ray is None or not needs_ray(TrainingJobSpec.model_validate(document["spec"])):
            return True, [], {}
        address = self.ctx.ray.address()
        if address is None:
            self._set(TrainingPhase.PENDING, "WaitingForRay", "starting the local Ray head")
            return False, [], {}
        return True, ["--ray-address", address], self.ctx.ray.env()

    def _start_attempt(self) -> None:
        document = self._local_manifest()
        ready, ray_args, ray_env = self._ray_address(document)
        if not ready:
            return
        manifest = self.ctx.write_manifest(f"trainingjob-{self.name}", document)
        argv = self.ctx.runtime(
            "train",
            "--spec",
            str(manifest),
            "--job-id",
            f"local-{self.name}",
            "--progress-file",
            str(self.progress_path),
            *ray_args,
        )
        self.ctx.supervisor.start(self.process_name, argv, env=ray_env)
        attempt = Attempt(index=len(self.status.attempts), started_at=now())
        self.status = self.status.model_copy(
            update={
                "attempts": [*self.status.attempts, attempt],
                "start_time": self.status.start_time or now(),
            }
        )
        self._set(TrainingPhase.RUNNING, "Started", f"attempt {attempt.index} started")

    def _read_progress(self) -> None:
        document = read_json(self.progress_path)
        if not isinstance(document, dict):
            return
        aliases = {field.alias or name for name, field in Progress.model_fields.items()}
        shared = {k: v for k, v in document.items() if k in aliases}
        progress = Progress.model_validate(shared)
        update: dict[str, Any] = {
            "progress": progress,
            "main_metric": main_metric(progress.metrics),
        }
        if self.job.spec.search is not None:
            update["search"] = search_status(document, self.job.spec.search) or self.status.search
        self.status = self.status.model_copy(update=update)

    def _finish_attempt(self, code: int) -> None:
        child = self.ctx.supervisor.children.get(self.process_name)
        log = child.log_path if child else self.ctx.supervisor.log_dir / f"{self.process_name}.log"
        self.ctx.supervisor.reap(self.process_name)
        attempts = list(self.status.attempts)
        result = read_result(log) if code == 0 else None
        reason = None if result else last_error_line(log)
        attempts[-1] = attempts[-1].model_copy(
            update={
                "finished_at": now(),
                "result": "Succeeded" if result else "Failed",
                "reason": reason,
            }
        )
        self.status = self.status.model_copy(update={"attempts": attempts})
        if result is not None:
            trials = [
                TrialResult.model_validate({k: t[k] for k in ("id", "params", "metrics") if k in t})
                for t in result.pop("trials", None) or []
            ]
            origin = result.pop("origin", None)
            version = ModelVersionRef.model_validate(result)
            self.status = self.status.model_copy(
                update={
                    "model_version": version,
                    "trials": trials,
                    "completion_time": now(),
                    "main_metric": main_metric(version.metrics),
                }
            )
            message = f"version {version.version} stored"
            if isinstance(origin, dict) and origin.get("how"):
                message += f", {describe(str(origin['how']), str(origin.get('why', '')))}"
            self._set(TrainingPhase.SUCCEEDED, "Succeeded", message)
            return
        permanent = _PERMANENT.get(code)
        retries_left = len(attempts) <= self.job.spec.backoff_limit
        if permanent is None and retries_left:
            self.ctx.event(self.resource, "Retrying", f"attempt failed: {reason}")
            self._start_attempt()
            return
        self.status = self.status.model_copy(update={"completion_time": now()})
        self._set(TrainingPhase.FAILED, permanent or "BackoffLimitExceeded", reason or "failed")

    def tick(self) -> None:
        if self.finished:
            return
        child = self.ctx.supervisor.get(self.process_name)
        if child is None:
            self._start_attempt()
        else:
            self._read_progress()
            code = child.returncode()
            if code is not None:
                self._read_progress()
                self._finish_attempt(code)
        self.save()

    def save(self) -> None:
        self.ctx.state.save_status(KIND, self.name, self.job.spec.to_dict(), self.status.to_dict())
