"""Shared pieces of the three resources: the base model, metadata, conditions, scheduling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

GROUP = "modelops.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "modelops.dev/v1alpha1"

# DNS-1123 subdomain, as Kubernetes requires for most object names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1123 label: model names become label values and path segments.
LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes resource quantity such as 500m, 2, 4Gi, 1.5.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkKMGTPE]i?)?$"
# Explicit classes: Python, Rust (pydantic-core) and RE2 (the API server) disagree on \s.
NO_SPACE_PATTERN = r"^[^ \t\r\n]+$"
# Data and model stores: local paths or S3-compatible object stores.
# Where model versions go unless a resource names a store (a PVC mounted there).
DEFAULT_STORE_URI = "file:///var/lib/modelops/models"
# A store URI: no blanks, and no "." or ".." path segment, which would let a name
# climb out of the folder it is joined under (RE2: no look-around, so by segments; each
# alternative starts with its own character, so matching never backtracks).
# Every list, map and string a tenant writes is bounded (the CRD schema refuses more), so
# no object costs the operator more than its size allows and CEL rules stay in budget.
ShortText = Annotated[str, Field(max_length=256)]
LabelValue = Annotated[str, Field(max_length=63)]
_SEGMENT = r"([^/. \t\r\n][^/ \t\r\n]*|\.[^/. \t\r\n][^/ \t\r\n]*|\.\.[^/ \t\r\n]+)"
STORE_URI_PATTERN = rf"^(file|s3)://({_SEGMENT}|/{_SEGMENT}?)(/{_SEGMENT}?)*$"


@dataclass(frozen=True)
class CelRule:
    """A cross-field rule, checked twice from one definition.

    `rule` goes into the CRD as `x-kubernetes-validations` so the API server rejects
    bad objects; `check` is the same rule in Python for `modelops validate` and the
    admission webhook, so both paths give the same answer.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field:
            out["fieldPath"] = f".{self.field}"
        return out


@dataclass(frozen=True)
class TransitionRule:
    """An update rule over `self` and `oldSelf`, for the CRD only.

    The API server checks it on every update. It has no Python twin here because a model
    validates one object; the admission webhook checks the same fields with the old
    object in hand (see modelops.lifecycle.training.immutable_changes).
    """

    rule: str
    message: str
    field: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field:
            out["fieldPath"] = f".{self.field}"
        return out


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule | TransitionRule, ...] = (
        *getattr(cls, "cel_rules", ()),
        *getattr(cls, "transition_rules", ()),
    )
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_default=True,
        json_schema_extra=_schema_extra,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()
    transition_rules: ClassVar[tuple[TransitionRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise PydanticCustomError(
                    "cel_rule", "{message}", {"message": rule.message, "field": rule.field or ""}
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(BaseModel):
    """The part of Kubernetes metadata that manifests carry; server-set fields pass through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="Object name, a DNS-1123 subdomain.",
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_PATTERN,
        description="Namespace of the object; the current namespace when omitted.",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the object."
    )
    generation: int | None = Field(default=None, description="Set by the API server.")
    uid: str | None = Field(default=None, description="Set by the API server.")


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A pod toleration, as in the core API."""

    key: str | None = Field(default=None, max_length=316, description="Taint key to tolerate.")
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL,
        description="Exists matches any value; Equal matches value.",
    )
    value: str | None = Field(default=None, max_length=63, description="Taint value to match.")
    effect: TaintEffect | None = Field(
        default=None, description="Taint effect to tolerate; all effects when omitted."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A status condition following the Kubernetes API conventions."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="",
        max_length=1024,
        description="CamelCase machine-readable reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation this condition was computed from."
    )


class SchedulingSpec(ApiModel):
    """Where and how pods are scheduled."""

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Node labels that the pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=64,
        description="Tolerations added to the pods, e.g. for GPU taints.",
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=NAME_PATTERN, description="PriorityClass of the pods."
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        pattern=NO_SPACE_PATTERN,
        description="Workload image; the operator's configured image when omitted.",
    )
