"""TrainingJob: how a model version is trained (architecture, data, recipe, search, resources).

The parts of the spec live in their own modules (network, data, recipe, search) and the
status in training_status; they are re-exported here, where every user imports them.
"""

from __future__ import annotations

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
    ObjectMeta,
    SchedulingSpec,
    TransitionRule,
)
from modelops.api.data import DataFormat as DataFormat
from modelops.api.data import DataSpec as DataSpec
from modelops.api.data import SequenceSpec as SequenceSpec
from modelops.api.network import MAX_LAYER_WIDTH as MAX_LAYER_WIDTH
from modelops.api.network import RECURRENT as RECURRENT
from modelops.api.network import Activation as Activation
from modelops.api.network import Architecture as Architecture
from modelops.api.network import ModelSpec as ModelSpec
from modelops.api.network import Task as Task
from modelops.api.recipe import EarlyStoppingSpec as EarlyStoppingSpec
from modelops.api.recipe import Loss as Loss
from modelops.api.recipe import Mode as Mode
from modelops.api.recipe import OptimizerName as OptimizerName
from modelops.api.recipe import OptimizerSpec as OptimizerSpec
from modelops.api.recipe import ScheduleSpec as ScheduleSpec
from modelops.api.recipe import ScheduleType as ScheduleType
from modelops.api.recipe import TrainingSpec as TrainingSpec
from modelops.api.search import (
    CLASSIFICATION_METRICS,
    PARAMS_METRIC,
    REGRESSION_METRICS,
    reported_metrics,
    reported_metrics_cel,
)
from modelops.api.search import EnsembleMethod as EnsembleMethod
from modelops.api.search import ParamType as ParamType
from modelops.api.search import SearchParameter as SearchParameter
from modelops.api.search import SearchSpec as SearchSpec
from modelops.api.training_status import Attempt as Attempt
from modelops.api.training_status import DataSnapshot as DataSnapshot
from modelops.api.training_status import ModelVersionRef as ModelVersionRef
from modelops.api.training_status import Progress as Progress
from modelops.api.training_status import TrainingJobStatus as TrainingJobStatus
from modelops.api.training_status import TrainingPhase as TrainingPhase
from modelops.api.training_status import TrialResult as TrialResult
from modelops.api.training_status import WorkerCounts as WorkerCounts


class WorkerResources(SchedulingSpec):
    """Ray workers and what each one gets."""

    cel_rules = (
        CelRule(
            rule="!has(self.minWorkers) || !has(self.maxWorkers) || "
            "self.minWorkers <= self.maxWorkers",
            message="minWorkers must be less than or equal to maxWorkers",
            check=lambda r: (
                r.min_workers is None or r.max_workers is None or r.min_workers <= r.max_workers
            ),
            field="minWorkers",
        ),
        CelRule(
            rule="!has(self.minWorkers) || self.workers >= self.minWorkers",
            message="workers must be at least minWorkers",
            check=lambda r: r.min_workers is None or r.workers >= r.min_workers,
            field="workers",
        ),
        CelRule(
            rule="!has(self.maxWorkers) || self.workers <= self.maxWorkers",
            message="workers must be at most maxWorkers",
            check=lambda r: r.max_workers is None or r.workers <= r.max_workers,
            field="workers",
        ),
    )

    workers: int = Field(default=1, ge=1, le=1024, description="Ray workers to start.")
    min_workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Elastic range: training starts once this many workers are ready.",
    )
    max_workers: int | None = Field(
        default=None, ge=1, le=1024, description="Elastic range: the most workers used."
    )
    cpus_per_worker: str = Field(
        default="1", max_length=32, pattern=QUANTITY_PATTERN, description="CPU per worker."
    )
    memory_per_worker: str = Field(
        default="2Gi", max_length=32, pattern=QUANTITY_PATTERN, description="Memory per worker."
    )
    gpus_per_worker: int = Field(
        default=0, ge=0, le=16, description="nvidia.com/gpu per worker; 0 trains on CPU."
    )


class OutputSpec(ApiModel):
    """Where the trained version is stored, and under which model name."""

    model_name: str = Field(
        max_length=63,
        pattern=LABEL_PATTERN,
        description="Model name; versions are numbered per name.",
    )
    store_uri: str = Field(
        default=DEFAULT_STORE_URI,
        max_length=2048,
        pattern=STORE_URI_PATTERN,
        description="Artifact store root: versions go to <storeUri>/<namespace>/<modelName>/v<N> "
        "on a cluster (the operator's storeLayout), <storeUri>/<modelName>/v<N> locally.",
    )


class WarmStartSpec(ApiModel):
    """Start from a stored version's weights instead of from scratch."""

    model_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_PATTERN,
        description="Model to start from; spec.output.modelName when omitted.",
    )
    version: int | None = Field(
        default=None, ge=1, description="Version to start from; the newest when omitted."
    )
    delta_only: bool = Field(
        default=True, description="Train only on shards new or changed since that version."
    )
    replay_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Fraction of older shards replayed beside the delta, against forgetting.",
    )
    learning_rate_scale: float = Field(
        default=1.0, gt=0.0, le=10.0, description="Multiplies the learning rate when fine-tuning."
    )


# Fields that decide the checkpoints and the version a job writes: changing them under a
# job would resume one network from another's checkpoint, or write a version under
# another name. (camelCase, and whether the field may be absent.)
IMMUTABLE_SPEC_FIELDS: tuple[tuple[str, bool], ...] = (
    ("model", False),
    ("data", False),
    ("output", False),
    ("warmStart", True),
    ("search", True),
)
IMMUTABLE_MESSAGE = (
    "field is immutable: it decides the checkpoints and the model version the job writes; "
    "create a new TrainingJob instead"
)


def _immutable(field: str, optional: bool) -> TransitionRule:
    same = f"self.{field} == oldSelf.{field}"
    if optional:  # adding or removing the field is a change too
        same = f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || {same})"
    return TransitionRule(rule=same, message=IMMUTABLE_MESSAGE, field=field)


class TrainingJobSpec(ApiModel):
    """The desired training of one model version."""

    transition_rules = tuple(_immutable(name, optional) for name, optional in IMMUTABLE_SPEC_FIELDS)
    cel_rules = (
        CelRule(
            rule="!has(self.search) || self.search.metric in "
            + reported_metrics_cel("self.model.task"),
            message="search.metric is not reported for this model.task (classification: "
            f"{', '.join(CLASSIFICATION_METRICS)}; regression and forecasting: "
            f"{', '.join(REGRESSION_METRICS)})",
            check=lambda s: s.search is None or s.search.metric in reported_metrics(s.model.task),
            field="search.metric",
        ),
        CelRule(
            rule="!has(self.search) || !has(self.search.objectives) || "
            "self.search.objectives.all(o, o.metric == 'params' || o.metric in "
            + reported_metrics_cel("self.model.task")
            + ")",
            message="search.objectives names a metric not reported for this model.task "
            f"(classification: {', '.join(CLASSIFICATION_METRICS)}; regression and "
            f"forecasting: {', '.join(REGRESSION_METRICS)}; any task: {PARAMS_METRIC})",
            check=lambda s: (
                s.search is None
                or all(
                    o.metric in (*reported_metrics(s.model.task), PARAMS_METRIC)
                    for o in s.search.objectives
                )
            ),
            field="search.objectives",
        ),
    )

    model: ModelSpec = Field(description="Architecture, its parameters and the task.")
    data: DataSpec = Field(description="Training data.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training recipe.")
    search: SearchSpec | None = Field(default=None, description="Hyperparameter search.")
    resources: WorkerResources = Field(
        default_factory=WorkerResources, description="Workers and their resources."
    )
    output: OutputSpec = Field(description="Model name and artifact store.")
    warm_start: WarmStartSpec | None = Field(
        default=None, description="Fine-tune a stored version instead of training from scratch."
    )
    backoff_limit: int = Field(
        default=3, ge=0, le=100, description="Retries from the last checkpoint before Failed."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the job's pods this long after it finishes; kept when omitted.",
    )


class TrainingJob(ApiModel):
    """A TrainingJob resource."""

    api_version: Literal["modelops.dev/v1alpha1"] = Field(
        default=API_VERSION, description="modelops.dev/v1alpha1."
    )
    kind: Literal["TrainingJob"] = Field(default="TrainingJob", description="TrainingJob.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: TrainingJobSpec = Field(description="Desired training.")
    status: TrainingJobStatus | None = Field(default=None, description="Observed state.")
