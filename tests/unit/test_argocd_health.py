"""The Argo CD health check (docs/argocd-health.lua), run by real Lua interpreters.

Argo CD evaluates health scripts with gopher-lua, which has Lua 5.1 semantics; the script
is run under Lua 5.1 and 5.4 with `io`, `os` and `require` removed, as in Argo's sandbox.
The sample objects are built from the API models, so a renamed status field breaks these
tests rather than the health check in a user's Argo CD.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops.api.base import Condition, ConditionStatus, ObjectMeta
from modelops.api.deployment import (
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    TrafficSplit,
)
from modelops.api.training import (
    ModelVersionRef,
    Progress,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    WorkerCounts,
)
from modelops.api.update import (
    CurrentRun,
    DataDelta,
    IncrementalUpdate,
    IncrementalUpdateSpec,
    IncrementalUpdateStatus,
    RunRecord,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "argocd-health.lua"
GITOPS_DOC = ROOT / "docs" / "gitops.md"
INTERPRETERS = ("lua5.1", "lua5.4")
KINDS = ("TrainingJob", "ModelDeployment", "IncrementalUpdate")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


# -- running the script ---------------------------------------------------------------------


def lua_literal(value: Any) -> str:
    """A Lua table constructor for JSON-like data (None leaves the key out, as Argo does)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are valid Lua escapes for these strings
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        items = [f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


HARNESS = """
local write = io.write
local script = assert(loadfile({script}))
io, os, require, dofile, loadfile = nil, nil, nil, nil, nil
obj = {obj}
local hs = script()
write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")
"""


def interpreter_path(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run .ci/setup.d/lua.sh (apt-get install {name})")
    return path


@pytest.fixture(params=INTERPRETERS)
def lua(request: pytest.FixtureRequest) -> str:
    return interpreter_path(request.param)


def health(lua: str, obj: dict[str, Any]) -> tuple[str, str]:
    source = HARNESS.format(script=json.dumps(str(SCRIPT)), obj=lua_literal(obj))
    proc = subprocess.run(
        [lua, "-"], input=source, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    status, message = proc.stdout.rstrip("\n").split("\n", 1)
    return status, message


# -- sample objects, built from the models --------------------------------------------------


def _example(path: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / path).read_text())
    return data


def _cond(type_: str, status: bool, reason: str = "", message: str = "") -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.TRUE if status else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=NOW,
    )


def _meta(name: str, generation: int) -> ObjectMeta:
    return ObjectMeta(name=name, namespace="ml", generation=generation, uid="u-1")


def training_job(status: TrainingJobStatus | None, generation: int = 1) -> dict[str, Any]:
    spec = TrainingJobSpec.model_validate(_example("digits/trainingjob.yaml")["spec"])
    return TrainingJob(metadata=_meta("digits-mlp", generation), spec=spec, status=status).to_dict()


def model_deployment(status: ModelDeploymentStatus | None, generation: int = 1) -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate(_example("digits/modeldeployment.yaml")["spec"])
    return ModelDeployment(metadata=_meta("digits", generation), spec=spec, status=status).to_dict()


def incremental_update(
    status: IncrementalUpdateStatus | None, generation: int = 1, suspend: bool = False
) -> dict[str, Any]:
    raw = _example("digits/incrementalupdate.yaml")["spec"]
    spec = IncrementalUpdateSpec.model_validate({**raw, "suspend": suspend})
    return IncrementalUpdate(
        metadata=_meta("digits", generation), spec=spec, status=status
    ).to_dict()


def tj_status(**fields: Any) -> TrainingJobStatus:
    return TrainingJobStatus(observed_generation=1, **fields)


def md_status(**fields: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(observed_generation=1, **fields)


def iu_status(**fields: Any) -> IncrementalUpdateStatus:
    return IncrementalUpdateStatus(observed_generation=1, **fields)


VERSION_4 = ModelVersionRef(
    name="digits", version=4, uri="file:///var/lib/modelops/models/digits/4",
    metrics={"accuracy": 0.97},
)  # fmt: skip

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # TrainingJob
    "tj-pending": (
        training_job(tj_status(phase="Pending", workers=WorkerCounts(ready=0, desired=2))),
        "Progressing",
        "Pending: 0/2 workers ready",
    ),
    "tj-provisioning": (
        training_job(tj_status(phase="Provisioning", workers=WorkerCounts(ready=1, desired=2))),
        "Progressing",
        "1/2 workers ready",
    ),
    "tj-running": (
        training_job(
            tj_status(
                phase="Running",
                workers=WorkerCounts(ready=2, desired=2),
                progress=Progress(epoch=3, total_epochs=30, percent=10, metrics={"val_loss": 0.4}),
                conditions=[_cond("Ready", False, "Training", "epoch 3 of 30")],
            )
        ),
        "Progressing",
        "epoch 3/30 (10%)",
    ),
    "tj-succeeded": (
        training_job(
            tj_status(
                phase="Succeeded",
                model_version=VERSION_4,
                main_metric="accuracy=0.970",
                conditions=[_cond("Ready", True, "Succeeded", "version 4 stored")],
            )
        ),
        "Healthy",
        "Trained digits version 4 (accuracy=0.970)",
    ),
    "tj-failed": (
        training_job(
            tj_status(
                phase="Failed",
                message="backoffLimit 3 reached: worker OOMKilled",
                conditions=[_cond("Ready", False, "BackoffLimitExceeded", "3 attempts failed")],
            )
        ),
        "Degraded",
        "backoffLimit 3 reached: worker OOMKilled",
    ),
    "tj-failed-condition-only": (
        training_job(
            tj_status(
                phase="Failed",
                conditions=[_cond("Ready", False, "InvalidData", "no shards under the data uri")],
            )
        ),
        "Degraded",
        "no shards under the data uri",
    ),
    "tj-invalid-spec": (
        training_job(
            tj_status(
                phase="Pending",
                conditions=[_cond("Failed", True, "InvalidSpec", "spec.data.uri: no shards")],
            )
        ),
        "Degraded",
        "spec.data.uri: no shards",
    ),
    "tj-degraded-condition": (
        training_job(
            tj_status(
                phase="Running",
                conditions=[_cond("Degraded", True, "WorkerLost", "worker 1 was evicted")],
            )
        ),
        "Degraded",
        "worker 1 was evicted",
    ),
    "tj-stale-generation": (
        training_job(tj_status(phase="Succeeded", model_version=VERSION_4), generation=2),
        "Progressing",
        "generation 2 (status is of generation 1)",
    ),
    "tj-no-status": (training_job(None), "Progressing", "Waiting for the operator"),
    # ModelDeployment
    "md-available": (
        model_deployment(
            md_status(
                phase="Available",
                replicas=2,
                ready_replicas=2,
                desired_replicas=2,
                active_version=4,
                conditions=[
                    _cond("Available", True, "MinimumReplicasAvailable"),
                    _cond("Progressing", False, "RolloutComplete"),
                    _cond("Degraded", False, "AsExpected"),
                ],
            )
        ),
        "Healthy",
        "Serving version 4 on 2/2 replicas ready",
    ),
    "md-pending": (
        model_deployment(
            md_status(
                phase="Pending",
                desired_replicas=1,
                conditions=[_cond("Progressing", True, "WaitingForModel", "no promoted version")],
            )
        ),
        "Progressing",
        "no promoted version (0/1 replicas ready)",
    ),
    "md-canary": (
        model_deployment(
            md_status(
                phase="Progressing",
                replicas=3,
                ready_replicas=3,
                desired_replicas=3,
                active_version=4,
                candidate_version=5,
                rollout_step=0,
                traffic=TrafficSplit(stable=90, candidate=10),
            )
        ),
        "Progressing",
        "Rolling out version 5: 10% of traffic",
    ),
    "md-available-rolling-out": (
        model_deployment(
            md_status(
                phase="Available",
                ready_replicas=2,
                desired_replicas=2,
                active_version=4,
                candidate_version=5,
                traffic=TrafficSplit(stable=100, candidate=0, shadow=True),
                conditions=[
                    _cond("Available", True, "MinimumReplicasAvailable"),
                    _cond("Progressing", True, "Shadowing", "comparing version 5"),
                ],
            )
        ),
        "Progressing",
        "Rolling out version 5: shadow traffic",
    ),
    "md-degraded": (
        model_deployment(
            md_status(
                phase="Degraded",
                active_version=4,
                conditions=[
                    _cond("Available", True, "MinimumReplicasAvailable"),
                    _cond("Degraded", True, "RolledBack", "version 5 failed the gate: p95 412ms"),
                ],
            )
        ),
        "Degraded",
        "version 5 failed the gate: p95 412ms",
    ),
    "md-failed": (
        model_deployment(
            md_status(
                phase="Failed",
                conditions=[_cond("Available", False, "ModelNotFound", "no version 9 of digits")],
            )
        ),
        "Degraded",
        "ModelDeployment is Failed",
    ),
    "md-available-false": (
        model_deployment(
            md_status(
                phase="Available",
                conditions=[_cond("Available", False, "NoReadyReplicas", "0 of 2 ready")],
            )
        ),
        "Degraded",
        "0 of 2 ready",
    ),
    "md-scaled-to-zero": (
        model_deployment(
            md_status(
                phase="Available",
                active_version=4,
                desired_replicas=0,
                conditions=[
                    _cond("Available", False, "ScaledToZero", "no replica runs"),
                    _cond("Progressing", False, "Complete", "serving version 4"),
                ],
            )
        ),
        "Healthy",
        "Scaled to zero",
    ),
    "md-stale-generation": (
        model_deployment(md_status(phase="Available", active_version=4), generation=3),
        "Progressing",
        "observe generation 3",
    ),
    "md-no-status": (model_deployment(None), "Progressing", "Waiting for the operator"),
    # IncrementalUpdate
    "iu-idle-promoted": (
        incremental_update(
            iu_status(phase="Idle", promoted_version=5, last_result="Promoted"),
        ),
        "Healthy",
        "Idle; promoted version 5",
    ),
    "iu-idle-fresh": (incremental_update(iu_status(phase="Idle")), "Healthy", "watching"),
    "iu-idle-rejected": (
        incremental_update(iu_status(phase="Idle", promoted_version=4, last_result="Rejected")),
        "Healthy",
        "promoted version 4",
    ),
    "iu-waiting-for-baseline": (
        incremental_update(
            iu_status(
                phase="Idle",
                conditions=[
                    _cond("Ready", False, "WaitingForBaseline", "no promoted version of digits yet")
                ],
            )
        ),
        "Progressing",
        "no promoted version of digits yet",
    ),
    "iu-data-unavailable": (
        incremental_update(
            iu_status(
                phase="Idle",
                promoted_version=4,
                conditions=[_cond("Ready", False, "DataUnavailable", "cannot list the dataset")],
            )
        ),
        "Degraded",
        "cannot list the dataset",
    ),
    "iu-run-failed-degraded-condition": (
        incremental_update(
            iu_status(
                phase="Idle",
                promoted_version=4,
                last_result="Failed",
                conditions=[_cond("Degraded", True, "SchemaChanged", "column f64 is new")],
            )
        ),
        "Degraded",
        "column f64 is new",
    ),
    "iu-training": (
        incremental_update(
            iu_status(
                phase="Training",
                current_run=CurrentRun(
                    training_job="digits-mlp-u7",
                    started_at=NOW,
                    delta=DataDelta(new_shards=2, changed_shards=1, new_rows=900),
                ),
            )
        ),
        "Progressing",
        "Training update run digits-mlp-u7 on 3 new or changed shards",
    ),
    "iu-evaluating": (
        incremental_update(iu_status(phase="Evaluating")),
        "Progressing",
        "Evaluating update run",
    ),
    "iu-failed": (
        incremental_update(
            iu_status(
                phase="Failed",
                conditions=[_cond("Ready", False, "TrainingJobNotFound", "digits-mlp is missing")],
            )
        ),
        "Degraded",
        "digits-mlp is missing",
    ),
    "iu-last-run-failed": (
        incremental_update(
            iu_status(
                phase="Idle",
                promoted_version=4,
                last_result="Failed",
                history=[
                    RunRecord(
                        training_job="digits-mlp-u6",
                        decision="Failed",
                        reason="TrainingJob digits-mlp-u6 failed: shard 17 unreadable",
                        finished_at=NOW,
                    )
                ],
            )
        ),
        "Degraded",
        "Last update run failed: TrainingJob digits-mlp-u6 failed: shard 17 unreadable",
    ),
    "iu-suspended": (
        incremental_update(iu_status(phase="Idle", promoted_version=4), suspend=True),
        "Suspended",
        "no new update runs",
    ),
    "iu-stale-generation": (
        incremental_update(iu_status(phase="Idle"), generation=2, suspend=True),
        "Progressing",
        "observe generation 2",
    ),
    "iu-no-status": (incremental_update(None), "Progressing", "Waiting for the operator"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_health_of_sample_objects(lua: str, case: str) -> None:
    obj, expected_status, expected_message = CASES[case]
    status, message = health(lua, obj)
    assert (status, expected_message in message) == (expected_status, True), message
    assert "health check error" not in message


def test_the_cases_cover_every_outcome_of_every_kind() -> None:
    seen = {(obj["kind"], status) for obj, status, _ in CASES.values()}
    for kind in KINDS:
        for status in ("Healthy", "Progressing", "Degraded"):
            assert (kind, status) in seen, (kind, status)
    assert ("IncrementalUpdate", "Suspended") in seen


def test_every_phase_of_the_models_is_mapped(lua: str) -> None:
    """No phase the models allow falls through to Unknown."""
    builders = {
        "TrainingJob": (training_job, TrainingJobStatus),
        "ModelDeployment": (model_deployment, ModelDeploymentStatus),
        "IncrementalUpdate": (incremental_update, IncrementalUpdateStatus),
    }
    for kind, (build, status_model) in builders.items():
        phase_type = status_model.model_fields["phase"].annotation
        for phase in phase_type:  # type: ignore[union-attr]
            status, message = health(lua, build(status_model(phase=phase, observed_generation=1)))
            assert status in ("Healthy", "Progressing", "Degraded"), (kind, phase, message)


def test_an_unexpected_shape_is_unknown_not_an_error(lua: str) -> None:
    obj = training_job(tj_status(phase="Running"))
    obj["status"]["progress"] = 5  # not a table: indexing it raises inside the script
    status, message = health(lua, obj)
    assert status == "Unknown"
    assert message.startswith("health check error")


def test_another_kind_with_ready_condition(lua: str) -> None:
    obj = {"kind": "Other", "metadata": {"generation": 1}, "status": {"observedGeneration": 1}}
    assert health(lua, obj)[0] == "Unknown"
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True", "message": "fine"}]
    assert health(lua, obj) == ("Healthy", "fine")


def test_the_harness_can_fail(lua: str) -> None:
    """A broken script is reported as such, so a green run means the script ran."""
    source = HARNESS.format(script=json.dumps(str(SCRIPT)), obj="nil").replace(
        "local hs = script()", "local hs = nil; hs.status = 1"
    )
    proc = subprocess.run([lua, "-"], input=source, capture_output=True, text=True, check=False)
    assert proc.returncode != 0


def test_gitops_doc_embeds_this_script_for_every_kind() -> None:
    """docs/gitops.md's argocd-cm snippet carries the script verbatim, once per kind."""
    text = GITOPS_DOC.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    configmaps = [
        doc
        for block in blocks
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == "argocd-cm"
    ]
    assert len(configmaps) == 1, "docs/gitops.md needs exactly one argocd-cm ConfigMap"
    data = configmaps[0]["data"]
    script = SCRIPT.read_text()
    for kind in KINDS:
        key = f"resource.customizations.health.modelops.dev_{kind}"
        assert data.get(key) == script, f"{key} differs from docs/argocd-health.lua"
