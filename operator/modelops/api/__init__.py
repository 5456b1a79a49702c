"""The three custom resources, as pydantic models: the one source of truth for every field."""

from modelops.api.deployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from modelops.api.training import TrainingJob, TrainingJobSpec, TrainingJobStatus
from modelops.api.update import IncrementalUpdate, IncrementalUpdateSpec, IncrementalUpdateStatus

__all__ = [
    "IncrementalUpdate",
    "IncrementalUpdateSpec",
    "IncrementalUpdateStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
]
