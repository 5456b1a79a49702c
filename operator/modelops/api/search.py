"""Hyperparameter search of a TrainingJob (spec.search), and how its best trials combine."""

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
