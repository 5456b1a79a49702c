"""TrainingJob: how a model version is trained (architecture, data, recipe, search, resources)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

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
    TransitionRule,
)

RECURRENT = ("rnn", "gru", "lstm")


# Widest hidden layer: 16 layers of this width are ~4G weights, far past one GPU's memory,
# so no legitimate spec needs more and a huge width cannot be used to exhaust a node.
MAX_LAYER_WIDTH = 16384


class Architecture(StrEnum):
    MLP = "mlp"
    RNN = "rnn"
    GRU = "gru"
    LSTM = "lstm"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FORECASTING = "forecasting"


class Activation(StrEnum):
    RELU = "relu"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    GELU = "gelu"


class ModelSpec(ApiModel):
    """The network to train and the task it solves."""

    cel_rules = (
        CelRule(
            rule="!self.bidirectional || self.architecture != 'mlp'",
            message="bidirectional applies to rnn, gru and lstm only",
            check=lambda m: not m.bidirectional or m.architecture != Architecture.MLP,
            field="bidirectional",
        ),
    )

    architecture: Architecture = Field(description="Network family: mlp, rnn, gru or lstm.")
    task: Task = Field(
        default=Task.CLASSIFICATION,
        description="classification (softmax or sigmoid output), regression, or forecasting "
        "(a window of a series to the next value or values).",
    )
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [128, 64],
        max_length=16,
        description="Widths of the hidden layers of an MLP.",
    )
    activation: Activation = Field(
        default=Activation.RELU, description="Activation of the MLP's hidden layers."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout probability.")
    batch_norm: bool = Field(default=False, description="Batch normalisation after hidden layers.")
    hidden_size: int = Field(
        default=64, ge=1, le=8192, description="Hidden state size of an RNN, GRU or LSTM."
    )
    num_layers: int = Field(
        default=1, ge=1, le=16, description="Stacked recurrent layers of an RNN, GRU or LSTM."
    )
    bidirectional: bool = Field(
        default=False, description="Run the recurrent layers in both directions."
    )
    num_classes: int | None = Field(
        default=None,
        ge=2,
        le=100000,
        description="Classes of a classifier; inferred from the training data when omitted.",
    )


class DataFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


class SequenceSpec(ApiModel):
    """How a time series is cut into windows for forecasting."""

    cel_rules = (
        CelRule(
            rule="self.stride <= self.window",
            message="stride must not exceed window",
            check=lambda s: s.stride <= s.window,
            field="stride",
        ),
    )

    column: str = Field(min_length=1, max_length=256, description="Column holding the series.")
    window: int = Field(ge=2, le=100000, description="Past steps the model sees.")
    horizon: int = Field(default=1, ge=1, le=10000, description="Future steps it predicts.")
    stride: int = Field(default=1, ge=1, description="Steps between the starts of two windows.")


class DataSpec(ApiModel):
    """Where the training data lives and how to read it."""

    cel_rules = (
        CelRule(
            rule="has(self.label) || has(self.sequence)",
            message="set label (classification, regression) or sequence (forecasting)",
            check=lambda d: d.label is not None or d.sequence is not None,
            field="label",
        ),
    )

    uri: str = Field(
        max_length=2048,
        pattern=STORE_URI_PATTERN,
        description="Folder or prefix of shard files: file:///path or s3://bucket/prefix.",
    )
    format: DataFormat = Field(default=DataFormat.PARQUET, description="Shard file format.")
    features: list[str] = Field(
        default_factory=list,
        max_length=100000,
        description="Feature columns; every column but the label when empty.",
    )
    label: str | None = Field(
        default=None, min_length=1, max_length=256, description="Label column."
    )
    sequence: SequenceSpec | None = Field(
        default=None, description="Windowing of a time series, for forecasting."
    )
    validation_split: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Fraction of rows held out for validation."
    )
    holdout_uri: str | None = Field(
        default=None,
        max_length=2048,
        pattern=STORE_URI_PATTERN,
        description="Separate evaluation shards; the validation split is used when omitted.",
    )


class Loss(StrEnum):
    CROSS_ENTROPY = "crossEntropy"
    BINARY_CROSS_ENTROPY = "binaryCrossEntropy"
    MSE = "mse"
    MAE = "mae"
    HUBER = "huber"


class OptimizerName(StrEnum):
    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAGRAD = "adagrad"
    RMSPROP = "rmsprop"
    ADAM = "adam"
    ADAMW = "adamw"


class OptimizerSpec(ApiModel):
    """The optimizer and its hyperparameters."""

    cel_rules = (
        CelRule(
            rule="!self.nesterov || self.name == 'momentum'",
            message="nesterov needs the momentum optimizer",
            check=lambda o: not o.nesterov or o.name == OptimizerName.MOMENTUM,
            field="nesterov",
        ),
    )

    name: OptimizerName = Field(default=OptimizerName.ADAM, description="Optimizer.")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0, description="Learning rate.")
    momentum: float = Field(
        default=0.9, ge=0.0, lt=1.0, description="Momentum factor (momentum, rmsprop)."
    )
    nesterov: bool = Field(default=False, description="Nesterov momentum (momentum only).")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 weight decay.")
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0, description="Adam first-moment decay.")
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0, description="Adam second-moment decay.")


class ScheduleType(StrEnum):
    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"


class ScheduleSpec(ApiModel):
    """Learning-rate schedule, applied per epoch after an optional linear warm-up."""

    type: ScheduleType = Field(default=ScheduleType.CONSTANT, description="Schedule shape.")
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="Linear warm-up epochs.")
    step_size: int = Field(default=10, ge=1, description="Epochs between decays (step).")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0, description="Decay factor (step).")
    min_learning_rate: float = Field(
        default=0.0, ge=0.0, description="Floor of the cosine schedule."
    )


class Mode(StrEnum):
    MIN = "min"
    MAX = "max"


class EarlyStoppingSpec(ApiModel):
    """Stop when the monitored validation metric stops improving."""

    metric: str = Field(
        default="val_loss", min_length=1, max_length=64, description="Metric to monitor."
    )
    mode: Mode = Field(default=Mode.MIN, description="Whether lower or higher is better.")
    patience: int = Field(default=3, ge=1, le=1000, description="Epochs without improvement.")
    min_delta: float = Field(default=0.0, ge=0.0, description="Smallest change that counts.")


class TrainingSpec(ApiModel):
    """The training recipe."""

    cel_rules = (
        CelRule(
            rule="!has(self.schedule) || self.schedule.warmupEpochs < self.epochs",
            message="schedule.warmupEpochs must be less than epochs",
            check=lambda t: t.schedule.warmup_epochs < t.epochs,
            field="schedule",
        ),
    )

    epochs: int = Field(default=10, ge=1, le=10000, description="Passes over the data.")
    batch_size: int = Field(default=64, ge=1, le=1048576, description="Rows per step and worker.")
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Seed of shuffling, splits and initialisation."
    )
    loss: Loss | None = Field(
        default=None,
        description="Loss; crossEntropy for classification and mse otherwise when omitted.",
    )
    optimizer: OptimizerSpec = Field(
        default_factory=OptimizerSpec, description="Optimizer settings."
    )
    schedule: ScheduleSpec = Field(
        default_factory=ScheduleSpec, description="Learning-rate schedule."
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="Early stopping; off when omitted."
    )
    mixed_precision: bool = Field(
        default=True, description="Automatic mixed precision on GPU workers (ignored on CPU)."
    )


class ParamType(StrEnum):
    CHOICE = "choice"
    UNIFORM = "uniform"
    LOG_UNIFORM = "logUniform"
    INTEGER = "integer"


class SearchParameter(ApiModel):
    """One dimension of a hyperparameter search space."""

    cel_rules = (
        CelRule(
            rule="self.type != 'choice' || (has(self.values) && size(self.values) > 0)",
            message="a choice parameter needs values",
            check=lambda p: p.type != ParamType.CHOICE or bool(p.values),
            field="values",
        ),
        CelRule(
            rule="self.type == 'choice' || (has(self.low) && has(self.high) && self.low < self.high)",
            message="a range parameter needs low < high",
            check=lambda p: (
                p.type == ParamType.CHOICE
                or (p.low is not None and p.high is not None and p.low < p.high)
            ),
            field="high",
        ),
        CelRule(
            rule="self.type != 'logUniform' || (has(self.low) && self.low > 0.0)",
            message="a logUniform parameter needs low > 0",
            check=lambda p: p.type != ParamType.LOG_UNIFORM or (p.low is not None and p.low > 0),
            field="low",
        ),
    )

    path: str = Field(
        max_length=128,
        pattern=r"^(model|training)(\.[a-zA-Z][a-zA-Z0-9]*)+$",
        description="Field of spec.model or spec.training to vary, e.g. "
        "training.optimizer.learningRate.",
    )
    type: ParamType = Field(description="choice, uniform, logUniform or integer.")
    values: list[str] | None = Field(
        default=None,
        max_length=1000,
        description='Candidates of a choice, as strings parsed with YAML rules ("0.1", '
        '"[64, 32]", "relu").',
    )
    low: float | None = Field(default=None, description="Lower bound of a range.")
    high: float | None = Field(default=None, description="Upper bound of a range.")


class EnsembleMethod(StrEnum):
    MEAN = "mean"
    VOTE = "vote"
    WEIGHTED = "weighted"


class SearchSpec(ApiModel):
    """Hyperparameter search on Ray Tune; the best trial becomes the model version."""

    cel_rules = (
        CelRule(
            rule="self.ensembleTopK <= self.trials",
            message="ensembleTopK must not exceed trials",
            check=lambda s: s.ensemble_top_k <= s.trials,
            field="ensembleTopK",
        ),
        CelRule(
            rule="self.maxConcurrent <= self.trials",
            message="maxConcurrent must not exceed trials",
            check=lambda s: s.max_concurrent <= s.trials,
            field="maxConcurrent",
        ),
    )

    trials: int = Field(ge=1, le=1000, description="Trials to run.")
    max_concurrent: int = Field(default=1, ge=1, le=1000, description="Trials run at once.")
    metric: str = Field(
        default="val_loss", min_length=1, max_length=64, description="Metric that ranks trials."
    )
    mode: Mode = Field(default=Mode.MIN, description="Whether lower or higher is better.")
    space: list[SearchParameter] = Field(
        min_length=1, max_length=64, description="Dimensions of the search space."
    )
    ensemble_top_k: int = Field(
        default=0, ge=0, le=64, description="Save the best k trials as one ensemble; 0 for none."
    )
    ensemble_method: EnsembleMethod = Field(
        default=EnsembleMethod.MEAN, description="How the ensemble combines its members."
    )


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
        description="Artifact store: a versioned folder per model version goes under it.",
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
    start_time: datetime | None = Field(default=None, description="When training started.")
    completion_time: datetime | None = Field(default=None, description="When it finished.")


class TrainingJob(ApiModel):
    """A TrainingJob resource."""

    api_version: Literal["modelops.dev/v1alpha1"] = Field(
        default=API_VERSION, description="modelops.dev/v1alpha1."
    )
    kind: Literal["TrainingJob"] = Field(default="TrainingJob", description="TrainingJob.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: TrainingJobSpec = Field(description="Desired training.")
    status: TrainingJobStatus | None = Field(default=None, description="Observed state.")
