"""Round trips model → dict → model, with objects drawn from the generated CRD schemas.

Drawing from the CRD schema also checks that the schema and the pydantic model agree:
whatever the API server's schema accepts, the model accepts too, except where a
cross-field (CEL) rule says no.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelops.api.base import API_VERSION
from modelops.api.crd import RESOURCES, ResourceInfo, openapi_schema
from tests.unit.schema_strategy import from_schema


def _spec_strategy(info: ResourceInfo) -> st.SearchStrategy[dict[str, Any]]:
    schema = openapi_schema(info.model)["properties"]["spec"]
    return from_schema(schema)


@pytest.mark.parametrize("info", RESOURCES, ids=lambda i: i.kind)
def test_round_trip_from_crd_schema(info: ResourceInfo) -> None:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(spec=_spec_strategy(info))
    def check(spec: dict[str, Any]) -> None:
        document = {
            "apiVersion": API_VERSION,
            "kind": info.kind,
            "metadata": {"name": "x"},
            "spec": spec,
        }
        try:
            resource = info.model.model_validate(document)
        except ValidationError as error:
            kinds = {e["type"] for e in error.errors()}
            assert kinds == {"cel_rule"}, error  # the schema and the model must agree
            assume(False)
            return
        wire = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        again = info.model.model_validate(wire)
        assert again == resource
        assert again.model_dump(mode="json", by_alias=True, exclude_none=True) == wire

    check()
