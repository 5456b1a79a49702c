"""IncrementalUpdate: retrain on new data and promote only what evaluates at least as well."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from modelops.api.base import (
    API_VERSION,
    NAME_PATTERN,
    STORE_URI_PATTERN,
    ApiModel,
    CelRule,
    Condition,
    ObjectMeta,
)
from modelops.api.training import Mode


class ObjectRef(ApiModel):
    """A resource in the same namespace."""

    name: str = Field(max_length=253, pattern=NAME_PATTERN, description="Its name.")


class DetectSpec(ApiModel):
    """When new data starts an update run."""

    cel_rules = (
        CelRule(
            rule="self.minNewRows > 0 || self.minNewShards > 0",
            message="set minNewRows or minNewShards above 0",
            check=lambda d: d.min_new_rows > 0 or d.min_new_shards > 0,
            field="minNewShards",
        ),
    )

    interval_seconds: int = Field(
        default=60, ge=5, le=86400, description="How often the dataset is listed."
    )
    min_new_rows: int = Field(default=0, ge=0, description="New or changed rows that start a run.")
    min_new_shards: int = Field(
        default=1, ge=0, description="New or changed shards that start a run."
    )
    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^([^ ]+ +){4}[^ ]+$",
        description="Cron schedule (5 fields, UTC); runs start only at these times when set.",
    )


class StrategyType(StrEnum):
    FINE_TUNE = "fineTune"
    FULL_RETRAIN = "fullRetrain"


class StrategySpec(ApiModel):
    """How an update run trains."""

    type: StrategyType = Field(
        default=StrategyType.FINE_TUNE,
        description="fineTune warm-starts from the promoted version on the delta plus replay; "
        "fullRetrain trains from scratch on all data.",
    )
    epochs: int = Field(default=3, ge=1, le=10000, description="Epochs of a fine-tune run.")
    replay_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Fraction of older shards replayed."
    )
    learning_rate_scale: float = Field(
        default=0.5, gt=0.0, le=10.0, description="Multiplies the recipe's learning rate."
    )


class PromotionSpec(ApiModel):
    """The gate between a trained candidate and the serving version."""

    metric: str = Field(
        default="accuracy",
        min_length=1,
        max_length=64,
        description="Evaluation metric compared, e.g. accuracy, f1_macro, mse.",
    )
    mode: Mode = Field(default=Mode.MAX, description="Whether higher or lower is better.")
    max_regression: float = Field(
        default=0.0, ge=0.0, description="Largest worsening of the metric still promoted."
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0.0,
        description="Improvement required, when a candidate must beat the current version.",
    )
    evaluation_uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=STORE_URI_PATTERN,
        description="Holdout shards both versions are evaluated on; a fixed split of the "
        "TrainingJob's data when omitted.",
    )


class IncrementalUpdateSpec(ApiModel):
    """Keep a model fresh as its data grows."""

    training_job_ref: ObjectRef = Field(description="TrainingJob whose recipe and data are used.")
    deployment_ref: ObjectRef | None = Field(
        default=None, description="ModelDeployment that serves promoted versions."
    )
    detect: DetectSpec = Field(default_factory=DetectSpec, description="Change detection.")
    strategy: StrategySpec = Field(default_factory=StrategySpec, description="Training strategy.")
    promotion: PromotionSpec = Field(default_factory=PromotionSpec, description="Promotion gate.")
    history_limit: int = Field(default=20, ge=1, le=100, description="Runs kept in status.")
    suspend: bool = Field(default=False, description="Stop starting new runs.")


class UpdatePhase(StrEnum):
    IDLE = "Idle"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    FAILED = "Failed"


class SnapshotSummary(ApiModel):
    """A listing of the dataset."""

    shards: int = Field(default=0, ge=0, description="Shard files.")
    rows: int = Field(default=0, ge=0, description="Rows.")
    digest: str = Field(default="", max_length=128, description="Digest of the listing.")
    observed_at: datetime | None = Field(default=None, description="When it was listed.")


class DataDelta(ApiModel):
    """Data that differs from the promoted version's snapshot."""

    new_shards: int = Field(default=0, ge=0, description="Shards added.")
    changed_shards: int = Field(default=0, ge=0, description="Shards whose content changed.")
    deleted_shards: int = Field(default=0, ge=0, description="Shards removed.")
    new_rows: int = Field(default=0, ge=0, description="Rows in new and changed shards.")


class CurrentRun(ApiModel):
    """The update run in flight."""

    training_job: str = Field(max_length=253, description="Child TrainingJob.")
    started_at: datetime = Field(description="When it started.")
    delta: DataDelta = Field(default_factory=DataDelta, description="Delta it trains on.")
    base_version: int | None = Field(
        default=None, ge=1, description="Serving version it warm-starts from and is compared with."
    )
    snapshot_digest: str | None = Field(
        default=None, max_length=128, description="Digest of the listing it started on."
    )
    candidate_version: int | None = Field(
        default=None, ge=1, description="Version the child TrainingJob produced."
    )
    evaluation_job: str | None = Field(
        default=None, max_length=63, description="Job evaluating candidate and serving version."
    )


class RunRecord(ApiModel):
    """A finished update run."""

    training_job: str = Field(max_length=253, description="Child TrainingJob.")
    version: int | None = Field(default=None, ge=1, description="Candidate version.")
    delta: DataDelta = Field(default_factory=DataDelta, description="Delta trained on.")
    current_version: int | None = Field(
        default=None, ge=1, description="Serving version it was compared with."
    )
    candidate_metric: float | None = Field(default=None, description="Candidate's metric.")
    current_metric: float | None = Field(default=None, description="Serving version's metric.")
    snapshot_digest: str | None = Field(
        default=None, max_length=128, description="Digest of the listing it ran on."
    )
    decision: Literal["Promoted", "Rejected", "Failed"] = Field(description="Outcome.")
    reason: str = Field(max_length=2048, description="Why.")
    finished_at: datetime = Field(description="When it ended.")


class IncrementalUpdateStatus(ApiModel):
    """Observed state of an IncrementalUpdate."""

    phase: UpdatePhase = Field(default=UpdatePhase.IDLE, description="Phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation.")
    model_name: str | None = Field(
        default=None, max_length=63, description="Model of the referenced TrainingJob."
    )
    promoted_version: int | None = Field(
        default=None, ge=1, description="Version promoted most recently."
    )
    promoted_versions: list[int] = Field(
        default_factory=list,
        max_length=100,
        description="Versions this update promoted, oldest first (the newest historyLimit).",
    )
    runs: int = Field(
        default=0, ge=0, description="Update runs started; the next one is numbered runs + 1."
    )
    last_snapshot: SnapshotSummary | None = Field(default=None, description="Last listing.")
    pending_delta: DataDelta = Field(
        default_factory=DataDelta, description="Delta not yet trained on."
    )
    current_run: CurrentRun | None = Field(default=None, description="Run in flight.")
    history: list[RunRecord] = Field(
        default_factory=list, max_length=100, description="Finished runs, newest last."
    )
    last_result: Literal["Promoted", "Rejected", "Failed"] | None = Field(
        default=None, description="Outcome of the last run."
    )


class IncrementalUpdate(ApiModel):
    """An IncrementalUpdate resource."""

    api_version: Literal["modelops.dev/v1alpha1"] = Field(
        default=API_VERSION, description="modelops.dev/v1alpha1."
    )
    kind: Literal["IncrementalUpdate"] = Field(
        default="IncrementalUpdate", description="IncrementalUpdate."
    )
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: IncrementalUpdateSpec = Field(description="Desired updates.")
    status: IncrementalUpdateStatus | None = Field(default=None, description="Observed state.")
