"""The IncrementalUpdate's children as the plain dicts the builders return, and the pure
readings of what the reconcile observes (comparison, evaluation state, serving version)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelops.api.base import NAME_PATTERN
from modelops.api.training import DataFormat, TrainingJobSpec
from modelops.api.update import IncrementalUpdateSpec, IncrementalUpdateStatus, RunRecord
from modelops.k8s.incrementalupdate import builders, names
from modelops.k8s.incrementalupdate.data import RuntimeData
from modelops.k8s.incrementalupdate.observe import (
    evaluation_state,
    parse_comparison,
    serving_version,
)
from modelops.lifecycle.update import already_tried
from modelops.lifecycle.updateplan import Comparison
from tests.unit.manifests import incremental_update, training_job

UID = "0b6d1a52-0000-4000-8000-00000000abcd"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _ctx(
    update: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    pvc: str | None = None,
    name: str = "digits",
) -> builders.UpdateContext:
    spec = incremental_update()["spec"]
    spec.update(update or {})
    recipe_spec = training_job()["spec"]
    for key, value in (recipe or {}).items():
        if isinstance(value, dict):
            recipe_spec[key] = {**recipe_spec.get(key, {}), **value}
        else:
            recipe_spec[key] = value
    return builders.UpdateContext(
        name=name,
        namespace="team-a",
        uid=UID,
        spec=IncrementalUpdateSpec.model_validate(spec),
        recipe=TrainingJobSpec.model_validate(recipe_spec),
        settings=builders.EvaluationSettings(
            image="registry.example/runtime:1", store_volume_claim=pvc
        ),
    )


OWNER = {
    "apiVersion": "modelops.dev/v1alpha1",
    "kind": "IncrementalUpdate",
    "name": "digits",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


# -- the child TrainingJob --------------------------------------------------------------


def test_the_child_trainingjob_warm_starts_from_the_serving_version_on_the_delta() -> None:
    job = builders.training_job(_ctx(), sequence=3, base_version=5)
    assert job["apiVersion"] == "modelops.dev/v1alpha1"
    assert job["kind"] == "TrainingJob"
    assert job["metadata"] == {
        "name": "digits-run-3",
        "namespace": "team-a",
        "labels": {
            "app.kubernetes.io/managed-by": "modelops",
            "modelops.dev/update": "digits",
            "modelops.dev/model": "digits",
        },
        "ownerReferences": [OWNER],
        "annotations": {"modelops.dev/current-version": "5"},
    }
    spec = job["spec"]
    assert spec["warmStart"] == {
        "modelName": "digits",
        "version": 5,
        "deltaOnly": True,
        "replayFraction": 0.3,
        "learningRateScale": 0.5,
    }
    assert spec["training"]["epochs"] == 5  # the strategy's, not the recipe's 30
    assert "earlyStopping" not in spec["training"]
    recipe = TrainingJobSpec.model_validate(training_job()["spec"])
    assert spec["data"] == recipe.data.to_dict()
    assert spec["output"] == recipe.output.to_dict()
    assert spec["resources"] == recipe.resources.to_dict()
    TrainingJobSpec.model_validate(spec)  # what the webhook will check


def test_a_full_retrain_is_the_recipe_from_scratch() -> None:
    job = builders.training_job(_ctx({"strategy": {"type": "fullRetrain"}}), 1, base_version=5)
    assert "warmStart" not in job["spec"]
    assert (
        job["spec"]["training"]
        == TrainingJobSpec.model_validate(training_job()["spec"]).training.to_dict()
    )


# -- the evaluation Job -----------------------------------------------------------------


def test_the_evaluation_job_runs_compare_with_both_versions_under_a_restricted_context() -> None:
    job = builders.evaluation_job(_ctx(pvc="models"), sequence=3, candidate=8, current=5)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert meta["name"] == "digits-run-3-eval"
    assert meta["ownerReferences"] == [OWNER]
    labels = {
        "app.kubernetes.io/name": "modelops-evaluation",
        "app.kubernetes.io/instance": "digits",
        "app.kubernetes.io/component": "evaluation",
        "app.kubernetes.io/managed-by": "modelops",
        "modelops.dev/update": "digits",
        "modelops.dev/model": "digits",
        "modelops.dev/role": "evaluation",
        "modelops.dev/update-run": "digits-run-3",
    }
    assert meta["labels"] == labels
    assert meta["annotations"] == {
        "modelops.dev/candidate-version": "8",
        "modelops.dev/current-version": "5",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 3600
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "store", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
    ]
    (container,) = pod["containers"]
    assert container["name"] == "compare"
    assert container["image"] == "registry.example/runtime:1"
    assert container["command"] == [
        "python",
        "-m",
        "modelops_runtime",
        "compare",
        "--store",
        # The namespace's own folder of the recipe's store (the default layout).
        "file:///var/lib/modelops/models/team-a",
        "--model",
        "digits",
        "--candidate",
        "8",
        "--current",
        "5",
        "--format",
        "parquet",
        "--data",
        "file:///var/lib/modelops/data/digits/holdout",
        "--termination-log",
        "/dev/termination-log",
    ]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "store", "mountPath": "/var/lib/modelops", "readOnly": True},
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert {"secretRef": {"name": "modelops-store-credentials", "optional": True}} in container[
        "envFrom"
    ]


def test_evaluation_data_is_the_promotions_then_the_holdout_then_the_seeded_split() -> None:
    holdout = "file:///var/lib/modelops/data/digits/holdout"
    explicit = _ctx({"promotion": {"evaluationUri": "file:///eval"}})
    assert builders.evaluation_data_args(explicit) == [
        "--format",
        "parquet",
        "--data",
        "file:///eval",
    ]
    promotion = {"metric": "accuracy"}
    assert builders.evaluation_data_args(_ctx({"promotion": promotion})) == [
        "--format",
        "parquet",
        "--data",
        holdout,
    ]
    split = _ctx({"promotion": promotion}, {"data": {"holdoutUri": None}})
    assert builders.evaluation_data_args(split) == [
        "--format",
        "parquet",
        "--data",
        "file:///var/lib/modelops/data/digits/train",
        "--part",
        "validation",
        "--seed",
        "7",
        "--validation-split",
        "0.2",
    ]


def test_without_a_serving_version_the_candidate_is_evaluated_alone() -> None:
    job = builders.evaluation_job(_ctx(), sequence=1, candidate=2, current=None)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--current" not in command
    assert job["metadata"]["annotations"] == {"modelops.dev/candidate-version": "2"}
    assert "store" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}


def test_evaluation_pods_go_where_the_recipe_runs_without_asking_for_gpus() -> None:
    recipe = {
        "resources": {
            "gpusPerWorker": 2,
            "cpusPerWorker": "4",
            "memoryPerWorker": "16Gi",
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "priorityClassName": "training",
            "image": "registry.example/custom:2",
        }
    }
    pod = builders.evaluation_job(_ctx(recipe=recipe), 1, 2, 1)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["priorityClassName"] == "training"
    container = pod["containers"][0]
    assert container["image"] == "registry.example/custom:2"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"memory": "16Gi"},
    }


# -- names --------------------------------------------------------------------------------


@given(
    st.from_regex(r"[a-z][a-z0-9]{0,20}(\.[a-z][a-z0-9-]{0,20}[a-z0-9]){0,8}", fullmatch=True),
    st.integers(min_value=1, max_value=10**6),
)
def test_children_names_are_valid_for_any_update_name(update: str, sequence: int) -> None:
    run = names.training_job(update, sequence)
    assert re.match(NAME_PATTERN, run) and len(run) <= 253
    job = names.evaluation_job(update, sequence)
    assert DNS_LABEL.match(job) and len(job) <= 63
    assert len(names.label_value(update)) <= 63
    # Deterministic: a restarted operator computes the same names.
    assert names.evaluation_job(update, sequence) == job


def test_long_update_names_keep_distinct_evaluation_jobs() -> None:
    first, second = "a" * 70 + "x", "a" * 70 + "y"
    assert names.evaluation_job(first, 1) != names.evaluation_job(second, 1)
    assert names.label_value(first) != names.label_value(second)


# -- reading the evaluation ---------------------------------------------------------------


def _pod(phase: str, message: str | None = None, name: str = "digits-run-3-eval-abcde") -> Any:
    status: dict[str, Any] = {"phase": phase}
    if message is not None:
        status["containerStatuses"] = [
            {"name": "compare", "state": {"terminated": {"exitCode": 0, "message": message}}}
        ]
    return {"metadata": {"name": name}, "status": status}


COMPARISON = json.dumps(
    {"candidate": {"accuracy": 0.97, "f1_macro": 0.96}, "current": {"accuracy": 0.95}}
)


def test_a_comparison_is_parsed_from_the_termination_message() -> None:
    assert parse_comparison(COMPARISON) == Comparison(
        candidate={"accuracy": 0.97, "f1_macro": 0.96}, current={"accuracy": 0.95}
    )
    assert parse_comparison('{"candidate": {"accuracy": 1}, "current": null}') == Comparison(
        candidate={"accuracy": 1.0}, current=None
    )
    for bad in (None, "", "Traceback ...", "[]", '{"current": {}}', '{"candidate": 3}'):
        assert parse_comparison(bad) is None


def test_evaluation_state_from_the_job_and_its_pods() -> None:
    running = {"status": {"active": 1}}
    assert evaluation_state(running, [_pod("Running")]) == evaluation_state(None, [])
    assert evaluation_state(running, []).result is None
    done = evaluation_state({"status": {"succeeded": 1}}, [_pod("Succeeded", COMPARISON)])
    assert done.result is not None and done.result.candidate["accuracy"] == 0.97
    silent = evaluation_state(running, [_pod("Succeeded", "")])
    assert silent.failure is not None and "without a comparison" in silent.failure
    failed_job = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        }
    }
    crashed = _pod("Failed", "Traceback (most recent call last):\nFileNotFoundError: v8")
    state = evaluation_state(failed_job, [crashed])
    assert state.failure is not None
    assert state.failure.startswith("BackoffLimitExceeded: Job has reached")
    assert "FileNotFoundError: v8" in state.failure


# -- the serving version and repeated runs ------------------------------------------------


def _tj(name: str, model: str, phase: str, version: int | None, update: bool = False) -> Any:
    labels = {"modelops.dev/update": "digits"} if update else {}
    status: dict[str, Any] = {"phase": phase}
    if version is not None:
        status["modelVersion"] = {"name": model, "version": version, "uri": "file:///x"}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"output": {"modelName": model}},
        "status": status,
    }


def test_the_serving_version_is_the_newest_promoted_one() -> None:
    jobs = [
        _tj("digits-mlp", "digits", "Succeeded", 1),
        _tj("digits-run-1", "digits", "Succeeded", 4, update=True),  # not promoted by itself
        _tj("retrain", "digits", "Running", None),
        _tj("other", "fashion", "Succeeded", 9),
    ]
    assert serving_version(jobs, "digits", IncrementalUpdateStatus()) == 1
    promoted = IncrementalUpdateStatus(promoted_version=3, promoted_versions=[2, 3])
    assert serving_version(jobs, "digits", promoted) == 3
    assert serving_version([], "digits", IncrementalUpdateStatus()) is None


def test_a_run_is_not_repeated_on_the_data_it_did_not_promote() -> None:
    def record(decision: str, digest: str) -> RunRecord:
        return RunRecord(
            training_job="digits-run-1",
            decision=decision,  # type: ignore[arg-type]
            reason="r",
            finished_at=NOW,
            snapshot_digest=digest,
        )

    for decision in ("Rejected", "Failed"):
        status = IncrementalUpdateStatus(history=[record(decision, "sha256:aa")])
        assert already_tried(status, "sha256:aa") is not None
        assert already_tried(status, "sha256:bb") is None
    promoted = IncrementalUpdateStatus(history=[record("Promoted", "sha256:aa")])
    assert already_tried(promoted, "sha256:aa") is None
    assert already_tried(IncrementalUpdateStatus(), "sha256:aa") is None


# -- the listing ----------------------------------------------------------------------------


def _shard(path: Path, rows: int, columns: tuple[str, ...] = ("x", "target")) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: list(range(rows)) for c in columns}), path)


def test_the_listing_hashes_a_shard_once_while_it_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelops_runtime.data import shards

    _shard(tmp_path / "part-0.parquet", 5)
    _shard(tmp_path / "part-1.parquet", 7)
    uri = f"file://{tmp_path}"
    recorded = shards.snapshot(uri, DataFormat.PARQUET)  # what the runtime records
    hashed: list[str] = []
    real = shards.fingerprint

    def counting(uri: str, path: str, fmt: DataFormat) -> Any:
        hashed.append(path)
        return real(uri, path, fmt)

    monkeypatch.setattr(shards, "fingerprint", counting)
    data = RuntimeData()
    first = data.listing(uri, DataFormat.PARQUET)
    assert [s.rows for s in first.shards] == [5, 7] and first.columns == ["x", "target"]
    assert first == recorded
    second = data.listing(uri, DataFormat.PARQUET)
    assert second == first and hashed == ["part-0.parquet", "part-1.parquet"]

    _shard(tmp_path / "part-2.parquet", 3, ("x", "label"))
    (tmp_path / "part-0.parquet").unlink()
    third = data.listing(uri, DataFormat.PARQUET)
    assert [s.path for s in third.shards] == ["part-1.parquet", "part-2.parquet"]
    assert hashed[2:] == ["part-2.parquet"]
    assert data.columns(f"{uri}/part-2.parquet", DataFormat.PARQUET) == ["x", "label"]
