"""The built-in autoscaler of a ModelDeployment (spec.autoscaling): signal, target, limits."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from modelops.api.base import ApiModel, CelRule


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
