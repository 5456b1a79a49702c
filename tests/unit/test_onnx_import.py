"""`modelops import`: an ONNX file becomes a stored version with a card read from its
graph; broken, hostile, oversize or mismatched files are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from modelops.api.artifact import WeightsFormat
from modelops.api.training import Task
from modelops.cli import main as modelops
from modelops_runtime import artifacts, onnx_check
from modelops_runtime.errors import INPUT_ERROR_EXIT_CODE
from modelops_runtime.importer import SCORES, ImportRefused, Options, import_onnx
from modelops_runtime.predictor import load_predictor
from tests.onnx_models import (
    DIGIT_FEATURES,
    custom_op_graph,
    digits,
    digits_pipeline,
    external_data_graph,
    onnx_bytes,
    tiny_graph,
)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "digits.onnx"
    path.write_bytes(onnx_bytes(digits_pipeline(), digits()[0]))
    return path


def test_a_scikit_learn_pipeline_imports_with_its_interface_and_predictions(
    digits_file: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = modelops(
        [
            "import",
            str(digits_file),
            "--store",
            store,
            "--model",
            "digits",
            "--features",
            ",".join(DIGIT_FEATURES),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "as " + artifacts.version_uri(store, "digits", 1) in capsys.readouterr().out
    folder = artifacts.version_uri(store, "digits", 1)
    card = artifacts.load_card(folder)
    assert card.weights_format == WeightsFormat.ONNX and card.spec is None
    assert (card.task, card.n_features, card.n_outputs) == (Task.CLASSIFICATION, 64, 10)
    assert card.classes == [str(i) for i in range(10)]  # the ZipMap's labels
    assert card.features == DIGIT_FEATURES
    assert [(t.name, t.datatype, t.shape) for t in card.inputs] == [("input", "FP32", [-1, 64])]
    assert [(t.name, t.datatype, t.shape) for t in card.outputs] == [
        ("probabilities", "FP32", [-1, 10]),
        ("label", "INT64", [-1]),
    ]
    stored = onnx.load_from_string(Path(folder[len("file://") :], artifacts.ONNX).read_bytes())
    assert [o.name for o in stored.graph.output] == [SCORES]
    assert "ZipMap" not in {node.op_type for node in stored.graph.node}  # cut off: rows, not dicts
    x = digits()[0][1500:]
    predictor = load_predictor(folder)
    np.testing.assert_allclose(predictor.scores(x), digits_pipeline().predict_proba(x), atol=1e-5)
    assert (predictor.predict(x) == digits_pipeline().predict(x)).all()


def test_string_classes_come_from_the_classifier_and_serve_as_names(
    tmp_path: Path, store: str
) -> None:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = LogisticRegression(max_iter=500).fit(x.astype(np.float32), names)
    path = tmp_path / "iris.onnx"
    path.write_bytes(onnx_bytes(model, x.astype(np.float32), zipmap=False))
    card = artifacts.load_card(
        artifacts.version_uri(store, "iris", import_onnx(str(path), store, "iris", Options()))
    )
    assert card.classes == ["setosa", "versicolor", "virginica"]
    assert [(t.name, t.datatype) for t in card.outputs] == [
        ("probabilities", "FP32"),
        ("label", "BYTES"),
    ]
    with pytest.raises(
        ImportRefused, match=r"2 classes \(a, b\) for 3 score columns \(--classes\)"
    ):
        import_onnx(str(path), store, "iris", Options(classes=["a", "b"]))


def test_a_double_precision_regressor_serves_fp32_values(tmp_path: Path, store: str) -> None:
    x, y = load_diabetes(return_X_y=True)
    model = RandomForestRegressor(n_estimators=4, max_depth=3, random_state=0).fit(x, y)
    path = tmp_path / "diabetes.onnx"
    path.write_bytes(onnx_bytes(model, x))  # float64 input and output
    folder = artifacts.version_uri(
        store, "diabetes", import_onnx(str(path), store, "diabetes", Options())
    )
    card = artifacts.load_card(folder)
    assert (card.task, card.n_features, card.n_outputs, card.classes) == (
        Task.REGRESSION,
        10,
        1,
        None,
    )
    assert [(t.name, t.datatype, t.shape) for t in card.outputs] == [
        ("prediction", "FP32", [-1, 1])
    ]
    scores = load_predictor(folder).scores(x[:50])
    assert scores.dtype == np.float32 and scores.shape == (50, 1)
    np.testing.assert_allclose(scores[:, 0], model.predict(x[:50]), rtol=1e-5)


def test_a_torch_export_with_logits_serves_probabilities_from_the_chosen_output(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.hidden(x))
            return h, self.head(h)

    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(2, 4),),
        str(path),
        input_names=["x"],
        output_names=["embedding", "logits"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    args = ["import", str(path), "--store", store, "--model", "net", "--classes", "a,b,c"]
    assert modelops(args) == INPUT_ERROR_EXIT_CODE  # two float outputs: which are the scores?
    assert "name the scores with --output" in capsys.readouterr().err
    assert modelops([*args, "--output", "logits", "--logits", "--task", "classification"]) == 0
    folder = artifacts.version_uri(store, "net", 1)
    assert artifacts.load_card(folder).classes == ["a", "b", "c"]
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    expected = torch.softmax(net(torch.as_tensor(x))[1], dim=-1).detach().numpy()
    np.testing.assert_allclose(load_predictor(folder).scores(x), expected, atol=1e-6)


def test_each_import_is_a_new_version_and_never_touches_an_older_one(
    digits_file: Path, store: str
) -> None:
    first = import_onnx(str(digits_file), store, "digits", Options())
    card = Path(artifacts.version_uri(store, "digits", first)[len("file://") :], artifacts.CARD)
    before = card.read_bytes()
    assert import_onnx(str(digits_file), store, "digits", Options()) == first + 1
    assert card.read_bytes() == before
    assert artifacts.list_versions(store, "digits") == [first, first + 1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (Options(features=["a", "b"]), "--features names 2 columns; input 'X' takes 64"),
        (Options(task=Task.REGRESSION, logits=True), "--logits turns scores into probabilities"),
        (Options(output="nope"), "--output 'nope' is not a float tensor output"),
    ],
)
def test_options_that_do_not_fit_the_graph_are_refused_naming_the_file(
    digits_file: Path, store: str, options: Options, message: str
) -> None:
    with pytest.raises(ImportRefused, match=f"^{digits_file}: .*{message}"):
        import_onnx(str(digits_file), store, "digits", options)
    assert artifacts.list_versions(store, "digits") == []


def test_a_missing_file_or_a_folder_is_a_clear_error(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.onnx"
    assert (
        modelops(["import", str(missing), "--store", store, "--model", "m"])
        == INPUT_ERROR_EXIT_CODE
    )
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"
    with pytest.raises(onnx_check.OnnxFileError, match="is a folder"):
        import_onnx(str(tmp_path), store, "m", Options())


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "is empty"),
        (b"\x08\x07\x12\xff\xff\xff\xff\x0fgarbage", "malformed or truncated"),
        (tiny_graph()[:-30], "malformed or truncated"),
        (b"\x08\x07", "has no graph"),
        (custom_op_graph(), "operator 'Steal' is in the custom domain 'evil.ops'"),
        (
            external_data_graph(),
            "tensor 'W' keeps its data in an external file '../../../etc/passwd'",
        ),
    ],
    ids=["empty", "garbage", "truncated", "no-graph", "custom-op", "external-data"],
)
def test_malformed_and_hostile_files_are_refused_before_onnx_runtime_sees_them(
    tmp_path: Path, store: str, blob: bytes, message: str
) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(blob)
    with pytest.raises(onnx_check.OnnxFileError, match=f"^{path}: .*{message}"):
        import_onnx(str(path), store, "bad", Options())
    assert artifacts.list_versions(store, "bad") == []


def test_an_oversize_file_is_refused_without_reading_it(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.onnx"
    path.write_bytes(tiny_graph(doc="x" * 5000))
    monkeypatch.setenv(onnx_check.MAX_BYTES_ENV, "4096")
    with pytest.raises(
        onnx_check.OnnxFileError, match=rf"^{path}: \d+ bytes is over the limit of 4096"
    ):
        import_onnx(str(path), store, "big", Options())
    monkeypatch.setenv(onnx_check.MAX_BYTES_ENV, "lots")
    with pytest.raises(
        ValueError, match="MODELOPS_MAX_MODEL_BYTES='lots' is not a positive number"
    ):
        onnx_check.max_bytes()
    monkeypatch.delenv(onnx_check.MAX_BYTES_ENV)
    assert (
        import_onnx(str(path), store, "big", Options(task=Task.REGRESSION)) == 1
    )  # fine under the default
