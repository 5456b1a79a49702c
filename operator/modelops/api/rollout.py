"""How a ModelDeployment rolls out a new version (spec.rollout): strategy, steps, the gate."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from modelops.api.base import ApiModel, CelRule


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
        default="25%",
        max_length=8,
        pattern=r"^([0-9]+%?)$",
        description="Extra pods during an update.",
    )
    max_unavailable: str = Field(
        default="0",
        max_length=8,
        pattern=r"^([0-9]+%?)$",
        description="Pods that may be down during one.",
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
