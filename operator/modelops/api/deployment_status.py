"""The observed state of a ModelDeployment (its status): versions, traffic, load, history."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from modelops.api.base import ApiModel, Condition


class DeploymentPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class TrafficSplit(ApiModel):
    """Percent of live traffic per version."""

    stable: int = Field(default=100, ge=0, le=100, description="Percent to the stable version.")
    candidate: int = Field(default=0, ge=0, le=100, description="Percent to the candidate.")
    shadow: bool = Field(default=False, description="The candidate gets mirrored traffic.")


class LiveMetrics(ApiModel):
    """Load and quality of the serving versions."""

    rps: float = Field(default=0.0, ge=0, description="Requests per second.")
    p95_ms: float | None = Field(default=None, ge=0, description="p95 latency in ms.")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Fraction of 5xx answers.")
    accuracy: float | None = Field(default=None, ge=0, le=1, description="Accuracy from feedback.")
    updated_at: datetime | None = Field(default=None, description="When these were read.")


class ScaleDecision(ApiModel):
    """The autoscaler's last change."""

    time: datetime = Field(description="When it was made.")
    from_replicas: int = Field(ge=0, description="Replicas before.")
    to_replicas: int = Field(ge=0, description="Replicas after.")
    load: float = Field(ge=0, description="Load that drove it.")
    reason: str = Field(max_length=1024, description="Why.")


class ShadowReport(ApiModel):
    """Candidate against stable on mirrored traffic."""

    version: int | None = Field(default=None, ge=1, description="The shadowed candidate.")
    verdict: str | None = Field(
        default=None, max_length=4096, description="The gate's verdict on the comparison."
    )
    requests: int = Field(default=0, ge=0, description="Mirrored requests compared.")
    agreement: float | None = Field(
        default=None, ge=0, le=1, description="Fraction of equal predictions."
    )
    stable_accuracy: float | None = Field(default=None, ge=0, le=1, description="From feedback.")
    candidate_accuracy: float | None = Field(default=None, ge=0, le=1, description="From feedback.")


class Rollback(ApiModel):
    """A candidate that failed its gate; `latest` skips it until a newer version appears."""

    version: int = Field(ge=1, description="Version rolled back.")
    time: datetime = Field(description="When.")
    reason: str = Field(max_length=4096, description="The failed checks.")


class GateReport(ApiModel):
    """The candidate's gate at the current step, as last evaluated."""

    outcome: Literal["Pass", "Fail", "Pending"] = Field(description="Verdict.")
    reason: str = Field(default="", max_length=4096, description="The checks, one by one.")
    requests: int = Field(default=0, ge=0, description="Evidence: requests or compared rows.")
    error_rate: float | None = Field(default=None, ge=0, le=1, description="Candidate 5xx rate.")
    p95_ms: float | None = Field(default=None, ge=0, description="Candidate p95 latency.")
    accuracy: float | None = Field(default=None, ge=0, le=1, description="From feedback.")
    agreement: float | None = Field(default=None, ge=0, le=1, description="With stable (shadow).")


class AutoscalerStatus(ApiModel):
    """The autoscaler's view: load read, what it recommends, and why."""

    metric: str = Field(description="Load signal.")
    load: float = Field(ge=0, description="Current load, summed over the replicas.")
    recommendation: int = Field(ge=0, description="Replicas the load alone calls for.")
    reason: str = Field(max_length=64, description="Reason of the last decision.")
    message: str = Field(default="", max_length=1024, description="Its explanation.")


class Promotion(ApiModel):
    """A version that became the serving one."""

    version: int = Field(ge=1, description="Version promoted.")
    time: datetime = Field(description="When.")
    reason: str = Field(max_length=1024, description="Why.")


class BatchPredictionStatus(ApiModel):
    """Progress of batch prediction."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = Field(
        default="Pending", description="Job phase."
    )
    version: int | None = Field(default=None, ge=1, description="Version predicting.")
    shards_done: int = Field(default=0, ge=0, description="Shards written.")
    shards_total: int = Field(default=0, ge=0, description="Shards to write.")
    output_uri: str | None = Field(default=None, max_length=2048, description="Output.")
    job_name: str | None = Field(default=None, max_length=253, description="The Job running it.")


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment."""

    phase: DeploymentPhase = Field(default=DeploymentPhase.PENDING, description="Phase.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Available, Progressing, Degraded."
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Spec generation.")
    replicas: int = Field(default=0, ge=0, description="Replicas running.")
    ready_replicas: int = Field(default=0, ge=0, description="Replicas ready.")
    desired_replicas: int = Field(default=0, ge=0, description="Replicas wanted.")
    selector: str | None = Field(default=None, description="Label selector of the pods.")
    active_version: int | None = Field(default=None, ge=1, description="Stable version.")
    candidate_version: int | None = Field(default=None, ge=1, description="Candidate version.")
    rollout_step: int | None = Field(default=None, ge=0, description="Current canary step.")
    step_started_at: datetime | None = Field(
        default=None, description="When the current canary step (or shadow run) started."
    )
    gate: GateReport | None = Field(default=None, description="The candidate's gate.")
    autoscaler: AutoscalerStatus | None = Field(
        default=None, description="The built-in autoscaler's last decision."
    )
    traffic: TrafficSplit = Field(default_factory=TrafficSplit, description="Traffic split.")
    metrics: LiveMetrics = Field(default_factory=LiveMetrics, description="Live metrics.")
    last_scale: ScaleDecision | None = Field(default=None, description="Last scale decision.")
    shadow: ShadowReport | None = Field(default=None, description="Shadow comparison.")
    promotions: list[Promotion] = Field(
        default_factory=list, max_length=50, description="Recent promotions, newest last."
    )
    rollbacks: list[Rollback] = Field(
        default_factory=list, max_length=50, description="Rolled-back candidates, newest last."
    )
    batch_prediction: BatchPredictionStatus | None = Field(
        default=None, description="Batch prediction progress."
    )
    message: str | None = Field(default=None, max_length=4096, description="Last notable event.")
