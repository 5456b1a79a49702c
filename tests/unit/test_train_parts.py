"""Pure parts of training: schedules, optimizer state without pickle, search sampling,
replay sampling, losses, quantities, progress documents and evaluation metrics."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from modelops.api.artifact import ShardInfo
from modelops.api.training import (
    Loss,
    OptimizerName,
    OptimizerSpec,
    ScheduleSpec,
    SearchParameter,
    SearchSpec,
    Task,
    TrainingJobSpec,
)
from modelops_runtime.evaluate import ClassificationMetrics, RegressionMetrics
from modelops_runtime.train import checkpoint, progress, search_space
from modelops_runtime.train.losses import check_loss, make_loss, output_width
from modelops_runtime.train.optim import learning_rate, make_optimizer
from modelops_runtime.train.resources import quantity
from modelops_runtime.train.search import apply_params
from modelops_runtime.train.warmstart import replay_sample


def test_warmup_then_step_schedule() -> None:
    schedule = ScheduleSpec(type="step", warmup_epochs=2, step_size=3, gamma=0.5)
    rates = [learning_rate(schedule, 1.0, epoch, 10) for epoch in range(1, 11)]
    assert rates[:2] == pytest.approx([1 / 3, 2 / 3])
    assert rates[2:] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])


def test_cosine_schedule_falls_from_base_to_floor() -> None:
    schedule = ScheduleSpec(type="cosine", min_learning_rate=0.1)
    rates = [learning_rate(schedule, 1.0, epoch, 5) for epoch in range(1, 6)]
    assert rates[0] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(rates))


@pytest.mark.parametrize("name", list(OptimizerName))
def test_optimizer_state_round_trips_without_pickle(name: OptimizerName, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = OptimizerSpec(name=name, learning_rate=0.01, momentum=0.5 if name != "sgd" else 0.9)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # enable_grad: an earlier test in the session may have loaded a predictor, which
        # turns gradients off for the whole process.
        with torch.enable_grad():
            optimizer.zero_grad()
            model(torch.ones(4, 3)).pow(2).sum().backward()
            optimizer.step()

    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(spec, model.parameters(), 0.01)
    step(model, optimizer)
    checkpoint.save(tmp_path.as_uri(), 1, model.state_dict(), optimizer.state_dict(), {"finished": False})
    assert not any(p.suffix in (".pt", ".pkl", ".pth") for p in tmp_path.rglob("*"))

    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(checkpoint.load_model(tmp_path.as_uri(), 1))
    restored = make_optimizer(spec, clone.parameters(), 0.01)
    state = checkpoint.load_state(tmp_path.as_uri(), 1)
    restored.load_state_dict(checkpoint.load_optimizer(tmp_path.as_uri(), 1, state))
    step(model, optimizer)
    step(clone, restored)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.allclose(a, b)


def test_latest_checkpoint_ignores_unfinished_writes(tmp_path: Path) -> None:
    root = tmp_path.as_uri()
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in (1, 2, 3):
        checkpoint.save(root, epoch, model.state_dict(), optimizer.state_dict(), {})
    (tmp_path / "epoch-4").mkdir()  # weights written, state.json not yet
    assert checkpoint.latest_epoch(root) == 3
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-2", "epoch-3", "epoch-4"]
    assert [checkpoint.next_attempt(root) for _ in range(3)] == [0, 1, 2]


SPACE = [
    SearchParameter(path="training.optimizer.learningRate", type="logUniform", low=1e-4, high=1e-1),
    SearchParameter(path="training.batchSize", type="integer", low=16, high=18),
    SearchParameter(path="model.dropout", type="uniform", low=0.0, high=0.5),
    SearchParameter(path="model.hiddenLayers", type="choice", values=["[64, 32]", "[8]"]),
]


def sample_space(space: list[SearchParameter], trials: int, seed: int) -> list[dict[str, Any]]:
    """`trials` points drawn from Tune's domains of the space, parsed as a trial parses them."""
    search = SearchSpec(trials=trials, algorithm="random", space=space)
    domains = search_space.param_space(search)
    rng = np.random.default_rng(seed)
    configs = [{k: d.sample(random_state=rng) for k, d in domains.items()} for _ in range(trials)]
    return [search_space.point(search, config) for config in configs]


@given(seed=st.integers(0, 2**31 - 1))
def test_search_points_are_seeded_and_inside_the_space(seed: int) -> None:
    points = sample_space(SPACE, 20, seed)
    assert points == sample_space(SPACE, 20, seed)
    for point in points:
        assert 1e-4 <= point["training.optimizer.learningRate"] <= 1e-1
        assert point["training.batchSize"] in (16, 17, 18)
        assert 0.0 <= point["model.dropout"] <= 0.5
        assert point["model.hiddenLayers"] in ([64, 32], [8])


def test_search_parameters_apply_to_camel_case_paths() -> None:
    spec = TrainingJobSpec.model_validate(
        {"model": {"architecture": "mlp"}, "data": {"uri": "file:///d", "label": "y"}, "output": {"modelName": "m"}}
    )
    applied = apply_params(spec, {"training.optimizer.learningRate": 0.05, "model.hiddenLayers": [8]})
    assert applied.training.optimizer.learning_rate == 0.05 and applied.model.hidden_layers == [8]
    with pytest.raises(pydantic.ValidationError):
        apply_params(spec, {"model.dropout": 2.0})


def test_replay_sample_is_seeded_and_sized_by_the_fraction() -> None:
    shards = [ShardInfo(path=f"p{i}", size=1, sha256="x", rows=1) for i in range(10)]
    chosen = replay_sample(shards, 0.25, seed=4)
    assert len(chosen) == 3 and chosen == replay_sample(shards, 0.25, seed=4)
    assert replay_sample(shards, 0.0, seed=4) == [] and len(replay_sample(shards, 1.0, 4)) == 10


def test_loss_shapes_and_rules() -> None:
    assert output_width(Loss.BINARY_CROSS_ENTROPY, Task.CLASSIFICATION, 2, 1) == 1
    assert output_width(Loss.CROSS_ENTROPY, Task.CLASSIFICATION, 10, 1) == 10
    assert output_width(Loss.MSE, Task.FORECASTING, 0, 3) == 3
    with pytest.raises(ValueError, match="classification"):
        check_loss(Loss.CROSS_ENTROPY, Task.REGRESSION)
    logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
    for loss in (Loss.CROSS_ENTROPY, Loss.BINARY_CROSS_ENTROPY, Loss.MSE, Loss.MAE, Loss.HUBER):
        right = make_loss(loss, Task.CLASSIFICATION)(logits, torch.tensor([0, 1]))
        wrong = make_loss(loss, Task.CLASSIFICATION)(logits, torch.tensor([1, 0]))
        assert float(right) < float(wrong)


def test_quantities() -> None:
    assert quantity("500m") == 0.5 and quantity("2") == 2 and quantity("2Gi") == 2 * 2**30
    with pytest.raises(ValueError):
        quantity("two")


def test_progress_document_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    doc = progress.document("job", 3, 12, {"val_loss": 0.5}, samples_per_second=100.0, attempt=1)
    progress.write(path, doc)
    written = json.loads(path.read_text())
    assert {k: written[k] for k in ("epoch", "totalEpochs", "percent", "attempt", "samplesPerSecond")} == {
        "epoch": 3, "totalEpochs": 12, "percent": 25, "attempt": 1, "samplesPerSecond": 100.0
    }
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


def test_classification_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=500)
    truth = rng.integers(0, 4, 500)
    acc = ClassificationMetrics(4)
    for part in np.array_split(np.arange(500), 3):
        acc.update(probs[part], probs[part], truth[part])
    got = acc.result()
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, probs.argmax(1)))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(truth, probs.argmax(1), average="macro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(truth, probs, labels=[0, 1, 2, 3]))


def test_regression_and_naive_forecast_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    y = x[:, -1:] + rng.normal(0, 0.5, (300, 1))
    predicted = y + rng.normal(0, 0.2, (300, 1))
    acc = RegressionMetrics(naive=True)
    for part in np.array_split(np.arange(300), 4):
        acc.update(x[part], predicted[part], y[part])
    got = acc.result()
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, predicted))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, predicted))
    assert got["r2"] == pytest.approx(skm.r2_score(y, predicted))
    naive = skm.mean_squared_error(y, x[:, -1:])
    assert got["mse_naive"] == pytest.approx(naive)
    assert got["skill"] == pytest.approx(1 - got["mse"] / naive)
    assert math.isfinite(got["skill"])


def test_state_json_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """Finding 12: a write cut short leaves the previous file, never a truncated one."""
    from modelops_runtime import artifacts

    uri = f"file://{tmp_path}/epoch-3/state.json"
    artifacts.write_json(uri, {"epoch": 3, "loss": 0.5})
    with pytest.raises(TypeError):
        # Fails half-way through serialising ("a" is written before "z" fails).
        artifacts.write_json(uri, {"a": 1, "z": object()})
    assert json.loads((tmp_path / "epoch-3" / "state.json").read_text()) == {
        "epoch": 3,
        "loss": 0.5,
    }
    assert sorted(p.name for p in (tmp_path / "epoch-3").iterdir()) == ["state.json"]


def test_a_truncated_checkpoint_state_is_skipped_on_resume(tmp_path: Path) -> None:
    """Finding 12: a truncated `state.json` (older writers) must not block resume forever."""
    root = f"file://{tmp_path}/run"
    model = {"w": torch.ones(2)}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1).state_dict()
    checkpoint.save(root, 1, model, optimizer, {"step": 10})
    checkpoint.save(root, 2, model, optimizer, {"step": 20})
    (tmp_path / "run" / "epoch-2" / "state.json").write_text('{"step": 20, "epo')
    assert checkpoint.latest_epoch(root) == 1
    assert checkpoint.load_state(root, 1)["step"] == 10
