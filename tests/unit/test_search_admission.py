"""spec.search admission: each bad search is rejected naming its field, by the same rule
in Python and in the CRD's CEL."""

from __future__ import annotations

from typing import Any

import pytest

from modelops.api.crd import RESOURCES, crd_manifest
from modelops.api.search import SearchSpec
from modelops.api.training import TrainingJob
from modelops.api.validation import parse_resource
from tests.unit.manifests import load_example, mutate

MULTI = {
    "objectives": [{"metric": "val_accuracy", "mode": "max"}, {"metric": "params", "mode": "min"}],
    "select": {
        "metric": "val_accuracy",
        "mode": "max",
        "tieBreak": {"metric": "params", "mode": "min"},
    },
}


def search_job(**search: Any) -> dict[str, Any]:
    document = load_example("search/trainingjob.yaml")
    document["spec"]["search"].update(search)
    return document


def problems_of(document: dict[str, Any]) -> list[str]:
    resource, problems = parse_resource(document)
    assert resource is None, "the manifest was admitted"
    return [f"{p.path}: {p.message}" for p in problems]


def test_a_search_with_only_trials_and_space_gets_tpe_with_asha() -> None:
    resource, problems = parse_resource(search_job())
    assert not problems and isinstance(resource, TrainingJob) and resource.spec.search is not None
    search = resource.spec.search
    assert (search.algorithm.value, search.early_stopping.type.value) == ("tpe", "asha")
    assert search.goals()[0].metric == "val_accuracy"


def test_a_multi_objective_search_with_a_rule_is_admitted() -> None:
    resource, problems = parse_resource(search_job(**MULTI))
    assert not problems and isinstance(resource, TrainingJob)


@pytest.mark.parametrize(
    ("case", "document", "path", "words"),
    [
        ("empty space", search_job(space=[]), "spec.search.space", "at least 1"),
        (
            "duplicate path",
            search_job(
                space=[{"path": "model.dropout", "type": "uniform", "low": 0.0, "high": 0.5}] * 2
            ),
            "spec.search.space",
            "once",
        ),
        (
            "grid over a range",
            search_job(algorithm="grid"),
            "spec.search.space",
            "grid enumerates choice parameters only",
        ),
        ("unreported metric", search_job(metric="val_mse"), "spec.search.metric", "not reported"),
        (
            "unreported metric for regression",
            mutate(search_job(metric="val_accuracy"), "spec.model.task", "regression"),
            "spec.search.metric",
            "not reported",
        ),
        (
            "unreported objective",
            search_job(
                objectives=[
                    {"metric": "val_accuracy", "mode": "max"},
                    {"metric": "latency", "mode": "min"},
                ],
                select={"metric": "val_accuracy", "tieBreak": {"metric": "latency", "mode": "min"}},
            ),
            "spec.search.objectives",
            "not reported",
        ),
        ("params as the metric", search_job(metric="params"), "spec.search.metric", "objectives"),
        (
            "several objectives without a rule",
            search_job(objectives=MULTI["objectives"]),
            "spec.search.select",
            "tieBreak",
        ),
        (
            "a rule without a tie-break",
            search_job(**{**MULTI, "select": {"metric": "val_accuracy", "mode": "max"}}),
            "spec.search.select.tieBreak",
            "required",
        ),
        (
            "a tie-break on the selection metric",
            search_job(
                **{
                    **MULTI,
                    "select": {
                        "metric": "val_accuracy",
                        "tieBreak": {"metric": "val_accuracy", "mode": "max"},
                    },
                }
            ),
            "spec.search.select.tieBreak.metric",
            "another metric",
        ),
        (
            "metric and weights",
            search_job(**{**MULTI, "select": {**MULTI["select"], "weights": {"params": 1.0}}}),
            "spec.search.select.metric",
            "exactly one",
        ),
        (
            "weights on a non-objective",
            search_job(
                **{
                    **MULTI,
                    "select": {
                        "weights": {"val_loss": 1.0},
                        "tieBreak": {"metric": "params", "mode": "min"},
                    },
                }
            ),
            "spec.search.select.weights",
            "only the objectives",
        ),
        (
            "select metric not an objective",
            search_job(
                **{
                    **MULTI,
                    "select": {
                        "metric": "val_loss",
                        "mode": "min",
                        "tieBreak": {"metric": "params", "mode": "min"},
                    },
                }
            ),
            "spec.search.select.metric",
            "one of the objectives",
        ),
        (
            "params first",
            search_job(**{**MULTI, "objectives": list(reversed(MULTI["objectives"]))}),
            "spec.search.objectives",
            "first objective",
        ),
        (
            "more concurrency than trials",
            search_job(maxConcurrent=5),
            "spec.search.maxConcurrent",
            "exceed",
        ),
        (
            "more start-up trials than trials",
            search_job(startupTrials=9),
            "spec.search.startupTrials",
            "exceed",
        ),
        (
            "start-up trials without tpe",
            search_job(startupTrials=2, algorithm="random"),
            "spec.search.startupTrials",
            "tpe only",
        ),
        (
            "no workers",
            search_job(workersPerTrial=0),
            "spec.search.workersPerTrial",
            "greater than",
        ),
        (
            "unknown scheduler",
            search_job(earlyStopping={"type": "pbt"}),
            "spec.search.earlyStopping.type",
            "asha",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_a_bad_search_is_rejected_with_its_field_path(
    case: str, document: dict[str, Any], path: str, words: str
) -> None:
    problems = problems_of(document)
    assert any(p.startswith(f"{path}: ") and words in p for p in problems), problems


def test_every_search_rule_is_in_the_crd_schema() -> None:
    info = next(r for r in RESOURCES if r.kind == "TrainingJob")
    text = str(crd_manifest(info))
    for rule in SearchSpec.cel_rules:
        assert rule.rule in text
    assert "self.search.metric in (self.model.task == 'classification'" in text
