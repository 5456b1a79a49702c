"""Examples are valid; bad manifests are rejected with a message naming the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops.api.validation import parse_resource, validate_spec, validate_text
from modelops.cli import main as cli_main
from tests.unit.manifests import (
    DELETE,
    EXAMPLES,
    incremental_update,
    model_deployment,
    mutate,
    training_job,
)

EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.yaml"))


def test_there_are_examples_for_every_kind() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in EXAMPLE_FILES}
    assert kinds == {"TrainingJob", "ModelDeployment", "IncrementalUpdate"}
    assert (EXAMPLES / "digits" / "trainingjob.yaml").is_file()
    forecasting = [p for p in EXAMPLE_FILES if "lstm" in p.read_text()]
    assert forecasting, "an LSTM forecaster example is expected"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_is_valid(path: Path) -> None:
    assert validate_text(path.read_text()) == []


Base = Callable[[], dict[str, Any]]
TJ, MD, IU = training_job, model_deployment, incremental_update

# (base manifest, dotted path to change, new value or DELETE, field path expected in the message)
BAD_MANIFESTS: list[tuple[str, Base, str, Any, str]] = [
    ("unknown kind", TJ, "kind", "TrainJob", "kind"),
    ("wrong apiVersion", TJ, "apiVersion", "modelops.dev/v1", "apiVersion"),
    ("upper-case name", TJ, "metadata.name", "Digits", "metadata.name"),
    ("underscore name", MD, "metadata.name", "my_model", "metadata.name"),
    ("missing name", IU, "metadata.name", DELETE, "metadata.name"),
    ("missing spec", TJ, "spec", DELETE, "spec"),
    ("unknown top field", TJ, "spec.modle", {}, "spec.modle"),
    ("unknown nested field", TJ, "spec.model.hiddenLayer", [3], "spec.model.hiddenLayer"),
    ("architecture enum", TJ, "spec.model.architecture", "transformer", "spec.model.architecture"),
    ("task enum", TJ, "spec.model.task", "ranking", "spec.model.task"),
    ("activation enum", TJ, "spec.model.activation", "softplus", "spec.model.activation"),
    ("dropout too high", TJ, "spec.model.dropout", 1.0, "spec.model.dropout"),
    ("hidden layers wrong type", TJ, "spec.model.hiddenLayers", "128", "spec.model.hiddenLayers"),
    ("bidirectional mlp", TJ, "spec.model.bidirectional", True, "spec.model.bidirectional"),
    ("one class", TJ, "spec.model.numClasses", 1, "spec.model.numClasses"),
    ("http data uri", TJ, "spec.data.uri", "http://example/data", "spec.data.uri"),
    ("data format enum", TJ, "spec.data.format", "json", "spec.data.format"),
    ("validation split 1", TJ, "spec.data.validationSplit", 1.0, "spec.data.validationSplit"),
    ("neither label nor sequence", TJ, "spec.data.label", DELETE, "spec.data.label"),
    (
        "window of 1",
        TJ,
        "spec.data.sequence",
        {"column": "v", "window": 1},
        "spec.data.sequence.window",
    ),
    ("epochs zero", TJ, "spec.training.epochs", 0, "spec.training.epochs"),
    ("epochs string", TJ, "spec.training.epochs", "many", "spec.training.epochs"),
    ("batch size negative", TJ, "spec.training.batchSize", -1, "spec.training.batchSize"),
    ("loss enum", TJ, "spec.training.loss", "hinge", "spec.training.loss"),
    ("optimizer enum", TJ, "spec.training.optimizer.name", "lbfgs", "spec.training.optimizer.name"),
    (
        "learning rate zero",
        TJ,
        "spec.training.optimizer.learningRate",
        0,
        "spec.training.optimizer.learningRate",
    ),
    (
        "nesterov with adam",
        TJ,
        "spec.training.optimizer.nesterov",
        True,
        "spec.training.optimizer.nesterov",
    ),
    ("schedule enum", TJ, "spec.training.schedule.type", "linear", "spec.training.schedule.type"),
    (
        "warm-up past epochs",
        TJ,
        "spec.training.schedule.warmupEpochs",
        30,
        "spec.training.schedule",
    ),
    (
        "patience zero",
        TJ,
        "spec.training.earlyStopping.patience",
        0,
        "spec.training.earlyStopping.patience",
    ),
    ("search without space", TJ, "spec.search", {"trials": 2, "space": []}, "spec.search.space"),
    (
        "search top-k over trials",
        TJ,
        "spec.search",
        {
            "trials": 2,
            "ensembleTopK": 3,
            "space": [{"path": "training.epochs", "type": "integer", "low": 1, "high": 5}],
        },
        "spec.search.ensembleTopK",
    ),
    (
        "choice without values",
        TJ,
        "spec.search",
        {"trials": 2, "space": [{"path": "model.activation", "type": "choice"}]},
        "spec.search.space[0].values",
    ),
    (
        "range low above high",
        TJ,
        "spec.search",
        {
            "trials": 2,
            "space": [{"path": "training.epochs", "type": "integer", "low": 5, "high": 1}],
        },
        "spec.search.space[0].high",
    ),
    (
        "log-uniform from zero",
        TJ,
        "spec.search",
        {
            "trials": 2,
            "space": [
                {
                    "path": "training.optimizer.learningRate",
                    "type": "logUniform",
                    "low": 0,
                    "high": 1,
                }
            ],
        },
        "spec.search.space[0].low",
    ),
    (
        "search path outside model",
        TJ,
        "spec.search",
        {
            "trials": 2,
            "space": [{"path": "resources.workers", "type": "integer", "low": 1, "high": 2}],
        },
        "spec.search.space[0].path",
    ),
    (
        "min workers above max",
        TJ,
        "spec.resources",
        {"workers": 2, "minWorkers": 4, "maxWorkers": 2},
        "spec.resources.minWorkers",
    ),
    (
        "workers above max",
        TJ,
        "spec.resources",
        {"workers": 5, "maxWorkers": 2},
        "spec.resources.workers",
    ),
    ("bad cpu quantity", TJ, "spec.resources.cpusPerWorker", "two", "spec.resources.cpusPerWorker"),
    (
        "bad memory quantity",
        TJ,
        "spec.resources.memoryPerWorker",
        "2 GB",
        "spec.resources.memoryPerWorker",
    ),
    ("gpus negative", TJ, "spec.resources.gpusPerWorker", -1, "spec.resources.gpusPerWorker"),
    (
        "toleration operator enum",
        TJ,
        "spec.resources.tolerations",
        [{"key": "a", "operator": "In"}],
        "spec.resources.tolerations[0].operator",
    ),
    (
        "toleration effect enum",
        TJ,
        "spec.resources.tolerations",
        [{"key": "a", "effect": "Never"}],
        "spec.resources.tolerations[0].effect",
    ),
    ("image with space", TJ, "spec.resources.image", "repo/img: 1", "spec.resources.image"),
    ("model name upper-case", TJ, "spec.output.modelName", "Digits", "spec.output.modelName"),
    ("missing output", TJ, "spec.output", DELETE, "spec.output"),
    (
        "replay fraction above 1",
        TJ,
        "spec.warmStart",
        {"replayFraction": 1.5},
        "spec.warmStart.replayFraction",
    ),
    ("backoff negative", TJ, "spec.backoffLimit", -1, "spec.backoffLimit"),
    ("md version word", MD, "spec.model.version", "newest", "spec.model.version"),
    ("md version zero", MD, "spec.model.version", "0", "spec.model.version"),
    (
        "md min replicas above max",
        MD,
        "spec.autoscaling.minReplicas",
        9,
        "spec.autoscaling.minReplicas",
    ),
    (
        "md zero without scale-to-zero",
        MD,
        "spec.autoscaling.minReplicas",
        0,
        "spec.autoscaling.minReplicas",
    ),
    ("md metric enum", MD, "spec.autoscaling.metric", "latency", "spec.autoscaling.metric"),
    ("md tolerance 1", MD, "spec.autoscaling.tolerance", 1.0, "spec.autoscaling.tolerance"),
    (
        "md stabilization negative",
        MD,
        "spec.autoscaling.scaleDown.stabilizationSeconds",
        -5,
        "spec.autoscaling.scaleDown.stabilizationSeconds",
    ),
    (
        "md prometheus url",
        MD,
        "spec.autoscaling.metricsSource",
        {"prometheusUrl": "prom:9090"},
        "spec.autoscaling.metricsSource.prometheusUrl",
    ),
    ("md strategy enum", MD, "spec.rollout.strategy", "bluegreen", "spec.rollout.strategy"),
    ("md canary without steps", MD, "spec.rollout.steps", [], "spec.rollout.steps"),
    (
        "md canary weight over 100",
        MD,
        "spec.rollout.steps",
        [{"weight": 150}],
        "spec.rollout.steps[0].weight",
    ),
    (
        "md canary weights fall",
        MD,
        "spec.rollout.steps",
        [{"weight": 50}, {"weight": 10}],
        "spec.rollout.steps",
    ),
    (
        "md error rate above 1",
        MD,
        "spec.rollout.analysis.maxErrorRate",
        2,
        "spec.rollout.analysis.maxErrorRate",
    ),
    ("md batch size zero", MD, "spec.batching.maxBatchSize", 0, "spec.batching.maxBatchSize"),
    ("md wait too long", MD, "spec.batching.maxWaitMs", 5000, "spec.batching.maxWaitMs"),
    (
        "md weighted ensemble not 100",
        MD,
        "spec.ensemble",
        {
            "method": "weighted",
            "members": [{"version": 1, "weight": 30}, {"version": 2, "weight": 30}],
        },
        "spec.ensemble.members",
    ),
    (
        "md ensemble of one",
        MD,
        "spec.ensemble",
        {"members": [{"version": 1}]},
        "spec.ensemble.members",
    ),
    ("md replicas negative", MD, "spec.replicas", -1, "spec.replicas"),
    (
        "md batch prediction uri",
        MD,
        "spec.batchPrediction",
        {"inputUri": "/data", "outputUri": "file:///out"},
        "spec.batchPrediction.inputUri",
    ),
    ("iu missing job ref", IU, "spec.trainingJobRef", DELETE, "spec.trainingJobRef"),
    (
        "iu ref name invalid",
        IU,
        "spec.trainingJobRef.name",
        "Digits MLP",
        "spec.trainingJobRef.name",
    ),
    ("iu interval too short", IU, "spec.detect.intervalSeconds", 1, "spec.detect.intervalSeconds"),
    (
        "iu no thresholds",
        IU,
        "spec.detect",
        {"minNewShards": 0, "minNewRows": 0},
        "spec.detect.minNewShards",
    ),
    ("iu bad cron", IU, "spec.detect.schedule", "every hour", "spec.detect.schedule"),
    ("iu strategy enum", IU, "spec.strategy.type", "incremental", "spec.strategy.type"),
    ("iu mode enum", IU, "spec.promotion.mode", "higher", "spec.promotion.mode"),
    (
        "iu regression negative",
        IU,
        "spec.promotion.maxRegression",
        -0.1,
        "spec.promotion.maxRegression",
    ),
    ("iu history limit zero", IU, "spec.historyLimit", 0, "spec.historyLimit"),
    ("iu suspend not bool", IU, "spec.suspend", "sometimes", "spec.suspend"),
]


def test_at_least_forty_distinct_bad_manifests() -> None:
    assert len({case[0] for case in BAD_MANIFESTS}) >= 40


@pytest.mark.parametrize(
    ("base", "path", "value", "expected"),
    [case[1:] for case in BAD_MANIFESTS],
    ids=[case[0] for case in BAD_MANIFESTS],
)
def test_bad_manifest_is_rejected_naming_the_field(
    base: Base, path: str, value: Any, expected: str
) -> None:
    document = mutate(base(), path, value)
    resource, problems = parse_resource(document)
    assert resource is None
    assert expected in [p.path for p in problems], problems


def test_validate_spec_uses_the_same_rules() -> None:
    spec = mutate(training_job(), "spec.resources", {"minWorkers": 3, "maxWorkers": 1})["spec"]
    problems = validate_spec("TrainingJob", spec)
    assert [p.path for p in problems] == ["spec.resources.minWorkers"]
    assert validate_spec("TrainingJob", training_job()["spec"]) == []


def test_cli_reports_file_field_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(training_job()))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(training_job(), "spec.training.epochs", 0)))
    assert cli_main(["validate", str(good)]) == 0
    capsys.readouterr()
    assert cli_main(["validate", str(good), str(bad)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{bad}: spec.training.epochs: Input should be greater than or equal to 1"]


def test_cli_reports_yaml_errors_and_multiple_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert cli_main(["validate", str(broken)]) == 1
    assert "not valid YAML" in capsys.readouterr().out
    multi = tmp_path / "multi.yaml"
    docs = [training_job(), mutate(model_deployment(), "spec.replicas", -1)]
    multi.write_text(yaml.safe_dump_all(docs))
    assert cli_main(["validate", str(multi)]) == 1
    assert f"{multi}: [1].spec.replicas:" in capsys.readouterr().out


def test_hidden_layer_widths_are_bounded() -> None:
    """Finding 12: `hiddenLayers: [-5, 0, 10**12]` is refused, each item by its path."""
    spec = mutate(training_job(), "spec.model.hiddenLayers", [-5, 0, 10**12, 64])["spec"]
    problems = validate_spec("TrainingJob", spec)
    assert [p.path for p in problems] == [
        "spec.model.hiddenLayers[0]",
        "spec.model.hiddenLayers[1]",
        "spec.model.hiddenLayers[2]",
    ]
    crd_file = Path(__file__).resolve().parents[2] / "crds" / "modelops.dev_trainingjobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    layers = schema["properties"]["spec"]["properties"]["model"]["properties"]["hiddenLayers"]
    assert (layers["items"]["minimum"], layers["items"]["maximum"]) == (1, 16384)
