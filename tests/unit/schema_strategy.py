"""Hypothesis strategies drawn from a structural OpenAPI v3 schema (the subset CRDs use)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


def _number(schema: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if integer:
        low = None if low is None else int(low) + (1 if schema.get("exclusiveMinimum") else 0)
        high = None if high is None else int(high) - (1 if schema.get("exclusiveMaximum") else 0)
        return st.integers(
            min_value=low if low is not None else -(2**31),
            max_value=high if high is not None else 2**31,
        )
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=bool(schema.get("exclusiveMinimum")) and low is not None,
        exclude_max=bool(schema.get("exclusiveMaximum")) and high is not None,
        allow_nan=False,
        allow_infinity=False,
        width=32,
    )


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("format") == "date-time":
        return st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(
            lambda d: d.isoformat()
        )
    max_len = schema.get("maxLength", 40)
    min_len = schema.get("minLength", 0)
    base = (
        st.from_regex(schema["pattern"], fullmatch=True)
        if "pattern" in schema
        else st.text(min_size=min_len, max_size=min(max_len, 40))
    )
    return base.filter(lambda s: min_len <= len(s) <= max_len)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against `schema`'s types, ranges, patterns and enums (not its CEL rules)."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if properties is None:
            values = from_schema(schema.get("additionalProperties", {"type": "string"}))
            return st.dictionaries(_KEYS, values, max_size=3)
        required = set(schema.get("required", []))
        fixed = {k: from_schema(v) for k, v in properties.items() if k in required}
        optional = {k: from_schema(v) for k, v in properties.items() if k not in required}
        return st.fixed_dictionaries(fixed, optional=optional)
    if kind == "array":
        return st.lists(
            from_schema(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 3), 3),
        )
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _string(schema)
    raise ValueError(f"schema without a supported type: {schema}")
