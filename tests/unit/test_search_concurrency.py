"""How many trials a search runs at once on a given Ray cluster, and a trial that cannot fit."""

from __future__ import annotations

from typing import Any

import pytest

from modelops.api.training import TrainingJob
from modelops.api.validation import parse_resource
from modelops_runtime.errors import InputError
from modelops_runtime.train.search import concurrency
from tests.unit.manifests import load_example


def spec_with(search: dict[str, Any], resources: dict[str, Any]) -> Any:
    document = load_example("search/trainingjob.yaml")
    document["spec"]["search"].update(search)
    document["spec"]["resources"] = resources
    resource, problems = parse_resource(document)
    assert not problems and isinstance(resource, TrainingJob)
    return resource.spec


def test_single_worker_trials_keep_max_concurrent_for_tune_to_place() -> None:
    spec = spec_with({"maxConcurrent": 4, "workersPerTrial": 1}, {"workers": 1, "cpusPerWorker": "1"})
    assert concurrency(spec, {"CPU": 1.0}) == 4


def test_multi_worker_trials_are_capped_by_the_cpus_the_cluster_holds() -> None:
    spec = spec_with({"maxConcurrent": 4, "workersPerTrial": 2}, {"workers": 6, "cpusPerWorker": "1"})
    assert concurrency(spec, {"CPU": 6.0}) == 3
    assert concurrency(spec, {"CPU": 16.0}) == 4


def test_multi_worker_trials_are_capped_by_the_gpus_the_cluster_holds() -> None:
    spec = spec_with(
        {"maxConcurrent": 4, "workersPerTrial": 2}, {"workers": 4, "cpusPerWorker": "1", "gpusPerWorker": 1}
    )
    assert concurrency(spec, {"CPU": 16.0, "GPU": 4.0}) == 2


def test_a_trial_larger_than_the_whole_cluster_is_an_input_error_naming_the_field() -> None:
    spec = spec_with({"maxConcurrent": 2, "workersPerTrial": 4}, {"workers": 2, "cpusPerWorker": "1"})
    with pytest.raises(InputError, match=r"search\.workersPerTrial: a trial of 4 workers needs 4 CPU .* has 2"):
        concurrency(spec, {"CPU": 2.0})


def test_a_single_worker_trial_larger_than_the_whole_cluster_is_an_input_error_too() -> None:
    spec = spec_with({"maxConcurrent": 2, "workersPerTrial": 1}, {"workers": 1, "cpusPerWorker": "4"})
    with pytest.raises(InputError, match=r"search\.workersPerTrial: a trial of 1 workers needs 4 CPU .* has 2"):
        concurrency(spec, {"CPU": 2.0})
