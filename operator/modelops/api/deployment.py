"""ModelDeployment: serving a model version, rolling out new ones, scaling with load.

The autoscaler's and the rollout's parts of the spec live in their own modules, and the
status in deployment_status; they are re-exported here, where every user imports them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelops.api.autoscaling import AutoscaleMetric as AutoscaleMetric
from modelops.api.autoscaling import AutoscalingSpec as AutoscalingSpec
from modelops.api.autoscaling import MetricsSource as MetricsSource
from modelops.api.autoscaling import ScalingRule as ScalingRule
from modelops.api.base import (
    API_VERSION,
    DEFAULT_STORE_URI,
    LABEL_PATTERN,
    QUANTITY_PATTERN,
    STORE_URI_PATTERN,
    ApiModel,
    CelRule,
    ObjectMeta,
    SchedulingSpec,
)
from modelops.api.data import DataFormat
from modelops.api.deployment_status import AutoscalerStatus as AutoscalerStatus
from modelops.api.deployment_status import BatchPredictionStatus as BatchPredictionStatus
from modelops.api.deployment_status import DeploymentPhase as DeploymentPhase
from modelops.api.deployment_status import GateReport as GateReport
from modelops.api.deployment_status import LiveMetrics as LiveMetrics
from modelops.api.deployment_status import ModelDeploymentStatus as ModelDeploymentStatus
from modelops.api.deployment_status import Promotion as Promotion
from modelops.api.deployment_status import Rollback as Rollback
from modelops.api.deployment_status import ScaleDecision as ScaleDecision
from modelops.api.deployment_status import ShadowReport as ShadowReport
from modelops.api.deployment_status import TrafficSplit as TrafficSplit
from modelops.api.rollout import AnalysisSpec as AnalysisSpec
from modelops.api.rollout import CanaryStep as CanaryStep
from modelops.api.rollout import RollingSpec as RollingSpec
from modelops.api.rollout import RolloutSpec as RolloutSpec
from modelops.api.rollout import RolloutStrategy as RolloutStrategy
from modelops.api.search import EnsembleMethod

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
        description="Artifact store root holding the model's versions (under "
        "<storeUri>/<namespace>/ on a cluster, the operator's storeLayout).",
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
