"""The observed state of a TrainingJob (its status): phase, attempts, progress, the version."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from modelops.api.base import ApiModel, Condition


class TrainingPhase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class WorkerCounts(ApiModel):
    """Workers ready against workers wanted."""

    ready: int = Field(default=0, ge=0, description="Workers ready.")
    desired: int = Field(default=0, ge=0, description="Workers wanted.")


class Progress(ApiModel):
    """Where the running training is."""

    epoch: int = Field(default=0, ge=0, description="Epochs finished.")
    total_epochs: int = Field(default=0, ge=0, description="Epochs planned.")
    percent: int = Field(default=0, ge=0, le=100, description="Share of epochs finished.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Latest metrics, e.g. val_loss, val_accuracy."
    )
    samples_per_second: float | None = Field(
        default=None, ge=0, description="Training throughput of the last epoch."
    )
    updated_at: datetime | None = Field(default=None, description="When progress was read.")


class Attempt(ApiModel):
    """One run of the Ray cluster; a failure starts a new attempt from the last checkpoint."""

    index: int = Field(ge=0, description="Attempt number, from 0.")
    started_at: datetime | None = Field(default=None, description="When it started.")
    finished_at: datetime | None = Field(default=None, description="When it ended.")
    result: Literal["Running", "Succeeded", "Failed"] = Field(
        default="Running", description="How the attempt ended."
    )
    reason: str | None = Field(default=None, max_length=1024, description="Why it failed.")
    last_checkpoint: str | None = Field(
        default=None, max_length=2048, description="URI of its last checkpoint."
    )


class DataSnapshot(ApiModel):
    """Summary of the shards a version was trained on; the full manifest sits in the store."""

    uri: str = Field(max_length=2048, description="Snapshot manifest in the store.")
    shards: int = Field(ge=0, description="Shard files.")
    rows: int = Field(ge=0, description="Rows.")
    digest: str = Field(max_length=128, description="Digest over paths, sizes and hashes.")


class ModelVersionRef(ApiModel):
    """A trained model version."""

    name: str = Field(max_length=63, description="Model name.")
    version: int = Field(ge=1, description="Version number.")
    uri: str = Field(max_length=2048, description="Folder of the version in the store.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation metrics.")
    data_snapshot: DataSnapshot | None = Field(default=None, description="Data the version saw.")
    parent_version: int | None = Field(default=None, ge=1, description="Warm-start parent.")


class TrialResult(ApiModel):
    """One search trial."""

    id: str = Field(max_length=128, description="Trial id.")
    params: dict[str, str] = Field(default_factory=dict, description="Sampled parameters.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")


class TrialState(StrEnum):
    RUNNING = "running"
    STOPPED_EARLY = "stoppedEarly"
    FINISHED = "finished"
    FAILED = "failed"


class TrialCounts(ApiModel):
    """Trials of a search by state; trials not started yet are in none of them."""

    running: int = Field(default=0, ge=0, description="Trials training now.")
    stopped_early: int = Field(
        default=0, ge=0, description="Trials the early-stopping scheduler ended."
    )
    finished: int = Field(default=0, ge=0, description="Trials that ran every epoch.")
    failed: int = Field(default=0, ge=0, description="Trials that failed.")


class TrialRow(ApiModel):
    """One row of the best-trials table: a trial's parameters and its objective metrics."""

    id: str = Field(max_length=128, description="Trial id.")
    state: TrialState | None = Field(default=None, description="Where the trial is.")
    epoch: int = Field(default=0, ge=0, description="Epochs the trial has trained.")
    params: dict[str, str] = Field(
        default_factory=dict,
        max_length=16,
        description="Its parameters (path to value, values cut to 64 characters).",
    )
    metrics: dict[str, float] = Field(
        default_factory=dict, max_length=4, description="Its latest objective metrics."
    )
    pareto: bool | None = Field(
        default=None, description="On the Pareto front (searches with several objectives)."
    )


class SearchStatus(ApiModel):
    """Where a hyperparameter search is: trials by state, the best so far, the best few."""

    summary: str = Field(
        default="", max_length=128, description="Trial counts in a line, for kubectl get."
    )
    trial_counts: TrialCounts = Field(default_factory=TrialCounts, description="Trials by state.")
    best: TrialRow | None = Field(default=None, description="The best trial so far.")
    top: list[TrialRow] = Field(
        default_factory=list,
        max_length=10,
        description="The best trials, best first (the Pareto front first with several objectives).",
    )


class TrainingJobStatus(ApiModel):
    """Observed state of a TrainingJob."""

    phase: TrainingPhase = Field(default=TrainingPhase.PENDING, description="Lifecycle phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="Spec generation last acted on."
    )
    message: str | None = Field(default=None, max_length=4096, description="Last notable event.")
    workers: WorkerCounts = Field(default_factory=WorkerCounts, description="Worker readiness.")
    progress: Progress = Field(default_factory=Progress, description="Training progress.")
    attempts: list[Attempt] = Field(default_factory=list, description="Attempts so far.")
    model_version: ModelVersionRef | None = Field(
        default=None, description="The version produced, once Succeeded."
    )
    main_metric: str | None = Field(
        default=None,
        max_length=128,
        description="The headline metric as name=value, for kubectl get.",
    )
    trials: list[TrialResult] = Field(default_factory=list, description="Search trials.")
    search: SearchStatus | None = Field(
        default=None, description="A running or finished search: trials by state, the best."
    )
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")
