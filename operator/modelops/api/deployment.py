"""ModelDeployment: serving a model version, rolling out new ones, scaling with load."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from modelops.api.base import (
    API_VERSION,
    DEFAULT_STORE_URI,
    LABEL_PATTERN,
    QUANTITY_PATTERN,
    STORE_URI_PATTERN,
    ApiModel,
    CelRule,
    Condition,
    ObjectMeta,
    SchedulingSpec,
)
from modelops.api.training import DataFormat, EnsembleMethod

VERSION_PATTERN = r"^(latest|[1-9][0-9]*)$"


class ModelRef(ApiModel):
    """Which model, and which of its versions, to serve."""

    name: str = Field(max_length=63, pattern=LABEL_PATTERN, description="Model name.")
    version: str = Field(
        default="latest",
        max_length=16,
        pattern=VERSION_PATTERN,
        description="A version number, or latest for the newest promoted version.",
    )
    store_uri: str = Field(
        default=DEFAULT_STORE_URI,
        max_length=2048,
        pattern=STORE_URI_PATTERN,
        description="Artifact store holding the model's versions.",
    )


class EnsembleMember(ApiModel):
    """One version inside an ensemble."""

    version: int = Field(ge=1, description="Version number.")
    weight: int = Field(
        default=0, ge=0, le=100, description="Percent weight (weighted method only)."
    )


class EnsembleSpec(ApiModel):
    """Serve several versions as one model."""

    cel_rules = (
        CelRule(
            rule="self.method != 'weighted' || self.members.map(m, m.weight).sum() == 100",
            message="weights of a weighted ensemble must sum to 100",
            check=lambda e: (
                e.method != EnsembleMethod.WEIGHTED or sum(m.weight for m in e.members) == 100
            ),
            field="members",
        ),
    )

    method: EnsembleMethod = Field(
        default=EnsembleMethod.MEAN, description="mean of outputs, majority vote, or weighted mean."
    )
    members: list[EnsembleMember] = Field(
        min_length=2, max_length=32, description="Member versions."
    )


class ScalingRule(ApiModel):
    """Limits on one direction of scaling.

    The step limits that are set apply together (the stricter wins). With neither
    set, the HPA's defaults apply: up by the larger of 4 replicas and 100% per
    period, down with no limit beyond the stabilization window.
    """

    stabilization_seconds: int = Field(
        ge=0,
        le=3600,
        description="Act on the extreme recommendation over this window: the lowest when "
        "scaling up, the highest when scaling down.",
    )
    max_step_replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Most replicas added or removed in one period.",
    )
    max_step_percent: int | None = Field(
        default=None, ge=1, le=1000, description="Most percent change in one period."
    )
    period_seconds: int = Field(
        default=15, ge=1, le=1800, description="Period the step limits apply to."
    )


class AutoscaleMetric(StrEnum):
    RPS = "rps"
    CONCURRENCY = "concurrency"
    QUEUE_DEPTH = "queueDepth"
    CPU = "cpu"


class MetricsSource(ApiModel):
    """Where the autoscaler reads load."""

    prometheus_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^ \t\r\n]+$",
        description="Prometheus HTTP API; the pods' /metrics are scraped when omitted.",
    )
    prometheus_selector: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"[^"]*")*$',
        description='Label matchers added to the Prometheus queries, e.g. namespace="ml",'
        'job="serving"; namespace="<the ModelDeployment\'s namespace>" when omitted.',
    )
    pod_metrics_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the pods' /metrics."
    )


class AutoscalingSpec(ApiModel):
    """The built-in autoscaler; turn it off to let kubectl scale, an HPA or KEDA own replicas."""

    cel_rules = (
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
            field="minReplicas",
        ),
        CelRule(
            rule="self.minReplicas > 0 || self.scaleToZero",
            message="minReplicas 0 needs scaleToZero",
            check=lambda a: a.min_replicas > 0 or a.scale_to_zero,
            field="minReplicas",
        ),
    )

    enabled: bool = Field(default=True, description="Run the built-in autoscaler.")
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    metric: AutoscaleMetric = Field(
        default=AutoscaleMetric.RPS,
        description="Load signal: requests per second, in-flight requests, queue depth, or CPU "
        "cores.",
    )
    target: float = Field(default=50.0, gt=0.0, description="Load per replica to aim for.")
    # 0.2, not the HPA's 0.1: the HPA's CPU signal is averaged over a minute, ours is
    # a 5-s request rate, whose +-20% noise would otherwise move a steady deployment.
    tolerance: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="Ignore load ratios within this of 1 (the default absorbs +-20% noise).",
    )
    scale_up: ScalingRule = Field(
        default_factory=lambda: ScalingRule(stabilization_seconds=0),
        description="Scale-up window and limits.",
    )
    scale_down: ScalingRule = Field(
        default_factory=lambda: ScalingRule(stabilization_seconds=300),
        description="Scale-down window and limits.",
    )
    scale_to_zero: bool = Field(
        default=False, description="Scale to zero when idle; the first queued request wakes it."
    )
    interval_seconds: int = Field(default=5, ge=1, le=300, description="How often load is read.")
    metrics_source: MetricsSource = Field(
        default_factory=MetricsSource, description="Where load is read."
    )


class RolloutStrategy(StrEnum):
    ROLLING = "rolling"
    CANARY = "canary"
    SHADOW = "shadow"


class CanaryStep(ApiModel):
    """Traffic to the candidate at one step, and how long to watch it."""

    weight: int = Field(ge=0, le=100, description="Percent of traffic to the candidate.")
    pause_seconds: int = Field(
        default=60, ge=0, le=86400, description="Watch time before the gate decides."
    )


class AnalysisSpec(ApiModel):
    """The gate a candidate must pass at each step; omitted thresholds are not checked."""

    max_error_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Highest fraction of 5xx responses."
    )
    max_p95_ms: float | None = Field(
        default=None, gt=0.0, description="Highest p95 latency in milliseconds."
    )
    min_accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Lowest accuracy from feedback."
    )
    max_accuracy_drop: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Largest accuracy drop against the stable one."
    )
    min_agreement: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Lowest agreement with the stable version."
    )
    min_requests: int = Field(
        default=50, ge=0, description="Requests the candidate must see before a verdict."
    )


class RollingSpec(ApiModel):
    """Rolling-update limits of the inference Deployment."""

    max_surge: str = Field(
        default="25%", pattern=r"^([0-9]+%?)$", description="Extra pods during an update."
    )
    max_unavailable: str = Field(
        default="0", pattern=r"^([0-9]+%?)$", description="Pods that may be down during one."
    )


class RolloutSpec(ApiModel):
    """How a new version replaces the serving one."""

    cel_rules = (
        CelRule(
            rule="!has(self.strategy) || self.strategy != 'canary' || "
            "(has(self.steps) && size(self.steps) > 0)",
            message="a canary rollout needs steps",
            check=lambda r: r.strategy != RolloutStrategy.CANARY or len(r.steps) > 0,
            field="steps",
        ),
        CelRule(
            rule="!has(self.steps) || self.steps.map(s, s.weight).isSorted()",
            message="canary step weights must not decrease",
            check=lambda r: all(
                a.weight <= b.weight for a, b in zip(r.steps, r.steps[1:], strict=False)
            ),
            field="steps",
        ),
    )

    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.ROLLING,
        description="rolling replaces pods; canary shifts traffic in steps behind a gate; "
        "shadow mirrors traffic to the candidate and reports.",
    )
    steps: list[CanaryStep] = Field(
        default_factory=list, max_length=20, description="Canary steps, weights not decreasing."
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="Gate checked at each step."
    )
    shadow_seconds: int = Field(
        default=300, ge=0, le=604800, description="How long a shadow comparison runs."
    )
    auto_promote: bool = Field(
        default=True, description="Promote a candidate that passes every step or the shadow run."
    )
    rolling: RollingSpec = Field(default_factory=RollingSpec, description="Rolling-update limits.")


class BatchingSpec(ApiModel):
    """Dynamic batching in the inference server."""

    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most rows per batch.")
    max_wait_ms: float = Field(
        default=5.0, ge=0.0, le=1000.0, description="Longest wait for a batch to fill."
    )
    max_queue: int = Field(
        default=1024, ge=1, le=1000000, description="Queued requests before 429 answers."
    )
    timeout_ms: int = Field(default=10000, ge=1, le=600000, description="Per-request deadline.")


class ServingResources(SchedulingSpec):
    """What each inference replica gets."""

    cpu: str = Field(default="1", max_length=32, pattern=QUANTITY_PATTERN, description="CPU.")
    memory: str = Field(
        default="1Gi", max_length=32, pattern=QUANTITY_PATTERN, description="Memory."
    )
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per replica.")


class BatchPredictionSpec(ApiModel):
    """Batch prediction over a dataset with the serving version."""

    input_uri: str = Field(
        max_length=2048, pattern=STORE_URI_PATTERN, description="Shards to predict on."
    )
    output_uri: str = Field(
        max_length=2048, pattern=STORE_URI_PATTERN, description="Where prediction shards go."
    )
    format: DataFormat = Field(default=DataFormat.PARQUET, description="Input shard format.")
    batch_size: int = Field(default=1024, ge=1, le=1048576, description="Rows per forward pass.")


class ModelDeploymentSpec(ApiModel):
    """The desired serving of a model."""

    model: ModelRef = Field(description="Model and version to serve.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Replica count; written through the scale subresource by the autoscaler, "
        "kubectl scale, an HPA or KEDA.",
    )
    ensemble: EnsembleSpec | None = Field(
        default=None, description="Serve several versions as one model."
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="Built-in autoscaler."
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout strategy.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Batching.")
    resources: ServingResources = Field(
        default_factory=ServingResources, description="Per-replica resources and scheduling."
    )
    batch_prediction: BatchPredictionSpec | None = Field(
        default=None, description="Batch prediction with the serving version."
    )


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


class ModelDeployment(ApiModel):
    """A ModelDeployment resource."""

    api_version: Literal["modelops.dev/v1alpha1"] = Field(
        default=API_VERSION, description="modelops.dev/v1alpha1."
    )
    kind: Literal["ModelDeployment"] = Field(
        default="ModelDeployment", description="ModelDeployment."
    )
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired serving.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")
