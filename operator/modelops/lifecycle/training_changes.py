"""What a change to a TrainingJob's spec does: refused (immutable) or deferred (next attempt)."""

from __future__ import annotations

from modelops.api.training import IMMUTABLE_MESSAGE, IMMUTABLE_SPEC_FIELDS, TrainingJobSpec


def _attribute(wire: str) -> str:
    """The model attribute of a camelCase field."""
    return next(
        name for name, info in TrainingJobSpec.model_fields.items() if (info.alias or name) == wire
    )


# The immutable fields and their message come from the API models, which also put them in
# the CRD as CEL transition rules: the API server and the webhook say the same thing.
IMMUTABLE_FIELDS = tuple((wire, _attribute(wire)) for wire, _ in IMMUTABLE_SPEC_FIELDS)
# Fields read again at each attempt; the running attempt keeps what it started with.
NEXT_ATTEMPT_FIELDS = (("training", "training"), ("resources", "resources"))


def immutable_changes(old: TrainingJobSpec, new: TrainingJobSpec) -> list[tuple[str, str]]:
    """(field path, message) for each immutable field that differs; defaults are compared."""
    problems = []
    for wire, attr in IMMUTABLE_FIELDS:
        if _wire(getattr(old, attr)) != _wire(getattr(new, attr)):
            problems.append((f"spec.{wire}", IMMUTABLE_MESSAGE))
    return problems


def change_notes(old: TrainingJobSpec, new: TrainingJobSpec) -> list[str]:
    """Admission warnings for accepted changes whose effect is deferred."""
    notes = []
    for wire, attr in NEXT_ATTEMPT_FIELDS:
        if _wire(getattr(old, attr)) != _wire(getattr(new, attr)):
            notes.append(
                f"spec.{wire} changed: the running attempt keeps its pods; the change applies "
                "to the next attempt"
            )
    return notes


def _wire(value: object) -> object:
    dump = getattr(value, "to_dict", None)
    return dump() if callable(dump) else value
