"""The training data of a TrainingJob (spec.data): where its shards live and how to read them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from modelops.api.base import STORE_URI_PATTERN, ApiModel, CelRule, ShortText


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
    features: list[ShortText] = Field(
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
