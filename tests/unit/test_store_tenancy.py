"""Finding 7 of the tenancy review: each namespace has its own folder of a store, and no
store URI or data path may climb out of the folder it names."""

from __future__ import annotations

import pytest

from modelops.api.tenancy import StoreLayout, store_root
from modelops.api.validation import validate_spec
from modelops.k8s import webhook
from modelops.k8s.config import OperatorConfig
from modelops.k8s.controller.pods import PodSettings
from tests.unit.manifests import model_deployment, mutate, training_job

STORE = "file:///var/lib/modelops/models"


def _problems(kind: str, path: str, value: object, config: OperatorConfig) -> list[str]:
    manifest = training_job() if kind == "TrainingJob" else model_deployment()
    spec = mutate(manifest, path, value)["spec"]
    return [str(p) for p in webhook.policy_problems(kind, spec, config.policy())]


def test_the_same_model_name_in_two_namespaces_gets_two_folders() -> None:
    assert store_root(STORE, "team-a", StoreLayout.NAMESPACED) == f"{STORE}/team-a"
    assert store_root(f"{STORE}/", "team-b", StoreLayout.NAMESPACED) == f"{STORE}/team-b"
    assert store_root("s3://models", "team-a", StoreLayout.NAMESPACED) == "s3://models/team-a"
    assert store_root(STORE, "team-a", StoreLayout.SHARED) == STORE
    # The operator's pods take the namespaced layout unless the platform team says so.
    assert PodSettings(image="x").store_root(STORE, "team-a") == f"{STORE}/team-a"
    shared = PodSettings(image="x", store_layout=StoreLayout.SHARED)
    assert shared.store_root(STORE, "team-a") == STORE


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("TrainingJob", "spec.output.storeUri"),
        ("TrainingJob", "spec.data.uri"),
        ("TrainingJob", "spec.data.holdoutUri"),
        ("ModelDeployment", "spec.model.storeUri"),
    ],
)
def test_no_uri_may_climb_out_of_its_folder(kind: str, path: str) -> None:
    manifest = training_job() if kind == "TrainingJob" else model_deployment()
    for uri in (f"{STORE}/../other", f"{STORE}/..", f"{STORE}/./x", "s3://bucket/a/../../b"):
        problems = validate_spec(kind, mutate(manifest, path, uri)["spec"])
        assert [p.path for p in problems] == [path], (uri, problems)
    for uri in (f"{STORE}/..hidden", f"{STORE}/.cache/x", "s3://bucket/v1.2/x..y"):
        assert validate_spec(kind, mutate(manifest, path, uri)["spec"]) == [], uri


@pytest.mark.parametrize(
    ("kind", "path"),
    [("TrainingJob", "spec.output.storeUri"), ("ModelDeployment", "spec.model.storeUri")],
)
def test_a_folder_inside_the_operators_store_is_refused(kind: str, path: str) -> None:
    """Naming `<store>/<other-namespace>` would reach that namespace's versions."""
    config = OperatorConfig(store_uri=STORE)
    assert _problems(kind, path, STORE, config) == []
    assert _problems(kind, path, f"{STORE}/", config) == []
    assert _problems(kind, path, "s3://team-a-models", config) == []  # a store of its own
    assert _problems(kind, path, f"{STORE}/team-b", config) == [
        f"{path}: store '{STORE}/team-b' is inside the operator's store '{STORE}', where "
        f"each namespace has its own folder: name '{STORE}' itself"
    ]


def test_a_store_allow_list_admits_listed_roots_only() -> None:
    config = OperatorConfig(store_uri=STORE, allowed_store_uris=("s3://team-models",))
    path = "spec.output.storeUri"
    assert _problems("TrainingJob", path, STORE, config) == []
    assert _problems("TrainingJob", path, "s3://team-models/", config) == []
    assert _problems("TrainingJob", path, "s3://team-models/other", config) == [
        f"{path}: store 's3://team-models/other' is not allowed; allowed: "
        f"{STORE}, s3://team-models"
    ]


def test_the_layout_and_the_list_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert OperatorConfig.from_env().store_layout == StoreLayout.NAMESPACED
    monkeypatch.setenv("MODELOPS_STORE_LAYOUT", "shared")
    monkeypatch.setenv("MODELOPS_ALLOWED_STORE_URIS", "s3://a, s3://b")
    config = OperatorConfig.from_env()
    assert config.store_layout == StoreLayout.SHARED
    assert config.policy().store_uris == ("s3://a", "s3://b")
    monkeypatch.setenv("MODELOPS_STORE_LAYOUT", "flat")
    with pytest.raises(ValueError, match="MODELOPS_STORE_LAYOUT='flat': expected one of"):
        OperatorConfig.from_env()


def test_a_custom_networks_source_archive_must_come_from_an_allowed_store() -> None:
    config = OperatorConfig(store_uri=STORE, allowed_store_uris=("s3://team-models",))
    sha = "0" * 64
    manifest = training_job()
    manifest["spec"]["model"] = {
        "architecture": "custom",
        "factory": "nets.cnn:build",
        "source": f"s3://other-team/_sources/cnn/{sha}.tar.gz",
    }
    problems = [str(p) for p in webhook.policy_problems("TrainingJob", manifest["spec"], config.policy())]
    assert problems == [
        "spec.model.source: store 's3://other-team' is not allowed; allowed: "
        f"{STORE}, s3://team-models"
    ]
    manifest["spec"]["model"]["source"] = f"s3://team-models/_sources/cnn/{sha}.tar.gz"
    assert webhook.policy_problems("TrainingJob", manifest["spec"], config.policy()) == []
