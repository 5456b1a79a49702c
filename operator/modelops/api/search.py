"""Hyperparameter search of a TrainingJob (spec.search), and how its best trials combine.

The search runs on Ray Tune: a searcher proposes points (random, grid, or Optuna's TPE),
a scheduler stops unpromising trials early (ASHA, HyperBand, median stopping), and with
several objectives the stored version is picked from the Pareto front by `select`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from modelops.api.base import ApiModel, CelRule, ShortText
from modelops.api.recipe import Mode


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
    values: list[ShortText] | None = Field(
        default=None,
        max_length=1000,
        description='Candidates of a choice, as strings parsed with YAML rules ("0.1", '
        '"[64, 32]", "relu").',
    )
    low: float | None = Field(default=None, description="Lower bound of a range.")
    high: float | None = Field(default=None, description="Upper bound of a range.")


# What the training loop reports per task, and `params` (a trial's parameter count), which
# only an objective may name: it does not change from epoch to epoch.
LOSS_METRICS = ("train_loss", "val_loss")
CLASSIFICATION_METRICS = (*LOSS_METRICS, "val_accuracy")
REGRESSION_METRICS = (*LOSS_METRICS, "val_mse", "val_mae")
PARAMS_METRIC = "params"


def reported_metrics(task: str) -> tuple[str, ...]:
    """The metrics a trial of `task` reports each epoch."""
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def reported_metrics_cel(task_expr: str) -> str:
    """CEL for `reported_metrics`, given the CEL expression of the task."""
    return (
        f"({task_expr} == 'classification' ? {_cel_list(CLASSIFICATION_METRICS)} "
        f": {_cel_list(REGRESSION_METRICS)})"
    )


class SearchAlgorithm(StrEnum):
    RANDOM = "random"
    GRID = "grid"
    TPE = "tpe"


class SchedulerType(StrEnum):
    ASHA = "asha"
    HYPERBAND = "hyperband"
    MEDIAN = "median"
    NONE = "none"


class TrialStopping(ApiModel):
    """Stops unpromising trials early, judged by their per-epoch metric (Ray Tune schedulers)."""

    type: SchedulerType = Field(
        default=SchedulerType.ASHA,
        description="asha (asynchronous successive halving), hyperband, median (median "
        "stopping rule) or none.",
    )
    grace_period: int = Field(
        default=1, ge=1, le=10000, description="Epochs every trial runs before it may be stopped."
    )
    reduction_factor: float = Field(
        default=3.0,
        gt=1.0,
        le=100.0,
        description="asha and hyperband: 1/reductionFactor of the trials go on at each rung.",
    )


class Objective(ApiModel):
    """A metric to optimise, and in which direction."""

    metric: str = Field(
        min_length=1,
        max_length=64,
        description="A metric the trial reports (e.g. val_accuracy, val_loss) or params, "
        "the network's parameter count.",
    )
    mode: Mode = Field(description="min or max.")


class Selection(ApiModel):
    """How the stored version is picked from the Pareto front of several objectives."""

    cel_rules = (
        CelRule(
            rule="has(self.metric) != has(self.weights)",
            message="set exactly one of metric (best in one objective) and weights "
            "(a weighted sum of the objectives)",
            check=lambda s: (s.metric is None) != (s.weights is None),
            field="metric",
        ),
        CelRule(
            rule="!has(self.weights) || size(self.weights) > 0",
            message="weights needs at least one objective",
            check=lambda s: s.weights is None or len(s.weights) > 0,
            field="weights",
        ),
        CelRule(
            rule="!has(self.metric) || self.tieBreak.metric != self.metric",
            message="tieBreak must name another metric than metric",
            check=lambda s: s.metric is None or s.tie_break.metric != s.metric,
            field="tieBreak.metric",
        ),
    )

    metric: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Pick the front member best in this objective.",
    )
    mode: Mode = Field(default=Mode.MAX, description="min or max, for metric.")
    weights: dict[str, float] | None = Field(
        default=None,
        max_length=8,
        description="Pick the front member with the highest weighted sum of its objectives, "
        "each rescaled to 0..1 over the front with 1 the best.",
    )
    tie_break: Objective = Field(description="Decides between members that score the same.")


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
            rule="!has(self.startupTrials) || self.startupTrials <= self.trials",
            message="startupTrials must not exceed trials",
            check=lambda s: s.startup_trials is None or s.startup_trials <= s.trials,
            field="startupTrials",
        ),
        CelRule(
            rule="!has(self.startupTrials) || self.algorithm == 'tpe'",
            message="startupTrials applies to algorithm tpe only",
            check=lambda s: s.startup_trials is None or s.algorithm == SearchAlgorithm.TPE,
            field="startupTrials",
        ),
        CelRule(
            rule="self.maxConcurrent <= self.trials",
            message="maxConcurrent must not exceed trials",
            check=lambda s: s.max_concurrent <= s.trials,
            field="maxConcurrent",
        ),
        CelRule(
            rule="self.space.all(p, self.space.exists_one(q, q.path == p.path))",
            message="each path may appear once in the space",
            check=lambda s: len({p.path for p in s.space}) == len(s.space),
            field="space",
        ),
        CelRule(
            rule="self.algorithm != 'grid' || self.space.all(p, p.type == 'choice')",
            message="grid enumerates choice parameters only; list the values of a range as "
            "a choice, or use random or tpe",
            check=lambda s: (
                s.algorithm != SearchAlgorithm.GRID
                or all(p.type == ParamType.CHOICE for p in s.space)
            ),
            field="space",
        ),
        CelRule(
            rule="self.metric != 'params'",
            message="params does not change between epochs; name it among objectives",
            check=lambda s: s.metric != PARAMS_METRIC,
            field="metric",
        ),
        CelRule(
            rule="!has(self.objectives) || "
            "self.objectives.all(o, self.objectives.exists_one(p, p.metric == o.metric))",
            message="each metric may appear once among objectives",
            check=lambda s: len({o.metric for o in s.objectives}) == len(s.objectives),
            field="objectives",
        ),
        CelRule(
            rule="!has(self.objectives) || size(self.objectives) == 0 || "
            "self.objectives[0].metric != 'params'",
            message="the first objective is what early stopping ranks by each epoch; "
            "list a metric the trial reports per epoch first, params after it",
            check=lambda s: not s.objectives or s.objectives[0].metric != PARAMS_METRIC,
            field="objectives",
        ),
        CelRule(
            rule="!has(self.objectives) || size(self.objectives) < 2 || has(self.select)",
            message="several objectives need a select rule (with a tieBreak) that picks "
            "the stored version from the Pareto front",
            check=lambda s: len(s.objectives) < 2 or s.select is not None,
            field="select",
        ),
        CelRule(
            rule="!has(self.select) || (has(self.objectives) && size(self.objectives) >= 2)",
            message="select picks among several objectives; list at least two",
            check=lambda s: s.select is None or len(s.objectives) >= 2,
            field="select",
        ),
        CelRule(
            rule="!has(self.select) || !has(self.select.metric) || "
            "self.objectives.exists(o, o.metric == self.select.metric)",
            message="select.metric must be one of the objectives",
            check=lambda s: (
                s.select is None
                or s.select.metric is None
                or s.select.metric in {o.metric for o in s.objectives}
            ),
            field="select.metric",
        ),
        CelRule(
            rule="!has(self.select) || !has(self.select.weights) || "
            "self.select.weights.all(k, self.objectives.exists(o, o.metric == k))",
            message="select.weights may weigh only the objectives",
            check=lambda s: (
                s.select is None
                or s.select.weights is None
                or set(s.select.weights) <= {o.metric for o in s.objectives}
            ),
            field="select.weights",
        ),
        CelRule(
            rule="!has(self.select) || "
            "self.objectives.exists(o, o.metric == self.select.tieBreak.metric)",
            message="select.tieBreak.metric must be one of the objectives",
            check=lambda s: (
                s.select is None or s.select.tie_break.metric in {o.metric for o in s.objectives}
            ),
            field="select.tieBreak.metric",
        ),
    )

    trials: int = Field(
        ge=1,
        le=1000,
        description="Trials to run; with grid, the number of combinations of the choices.",
    )
    max_concurrent: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Trials run at once, fewer when the cluster's free CPUs and GPUs do not "
        "fit that many.",
    )
    algorithm: SearchAlgorithm = Field(
        default=SearchAlgorithm.TPE,
        description="tpe (Optuna's tree-structured Parzen estimator, adaptive), random "
        "(points drawn from training.seed) or grid (every combination of the choices).",
    )
    startup_trials: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="tpe: trials drawn at random before TPE models the results; they are "
        "the first points a random search of the same training.seed draws. By default half "
        "of trials, at most 10.",
    )
    early_stopping: TrialStopping = Field(
        default_factory=TrialStopping,
        description="Stops unpromising trials before their last epoch (asha by default).",
    )
    metric: str = Field(
        default="val_loss",
        min_length=1,
        max_length=64,
        description="Metric that ranks trials (one objective); objectives replace it.",
    )
    mode: Mode = Field(default=Mode.MIN, description="Whether lower or higher is better.")
    objectives: list[Objective] = Field(
        default_factory=list,
        max_length=4,
        description="Several metrics optimised at once; the result is their Pareto front, "
        "and select picks the stored version. The first one drives early stopping.",
    )
    select: Selection | None = Field(
        default=None, description="With several objectives: picks the version from the front."
    )
    workers_per_trial: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Ray Train workers of one trial (DDP across them), each with the job's "
        "cpusPerWorker and gpusPerWorker.",
    )
    space: list[SearchParameter] = Field(
        min_length=1, max_length=64, description="Dimensions of the search space."
    )
    ensemble_top_k: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Save the best k trials as one ensemble (with several objectives, the "
        "best k of the Pareto front); 0 for none.",
    )
    ensemble_method: EnsembleMethod = Field(
        default=EnsembleMethod.MEAN, description="How the ensemble combines its members."
    )

    def goals(self) -> list[Objective]:
        """The objectives, or the one of metric and mode."""
        return list(self.objectives) or [Objective(metric=self.metric, mode=self.mode)]
