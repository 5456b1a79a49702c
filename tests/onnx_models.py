"""ONNX files for the import and serving tests: real scikit-learn conversions, and
hand-built graphs that are broken or hostile in one precise way each."""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import helper
from skl2onnx import to_onnx
from sklearn.base import ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DIGIT_FEATURES = [f"pixel{i}" for i in range(64)]


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: 1797 rows of 64 float32 pixels, labels 0-9."""
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


@functools.cache
def digits_pipeline(c: float = 1.0) -> Pipeline:
    """StandardScaler + LogisticRegression fitted on the first 1500 digits."""
    x, y = digits()
    model: Pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=200))
    return model.fit(x[:1500], y[:1500])


def onnx_bytes(model: ClassifierMixin | Pipeline, rows: np.ndarray, zipmap: bool = True) -> bytes:
    """A fitted scikit-learn model converted with skl2onnx, as a file's bytes."""
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    options = None if zipmap else {id(final): {"zipmap": False}}
    converted = to_onnx(model, rows[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    blob: bytes = converted.SerializeToString()
    return blob


def tiny_graph(
    node: onnx.NodeProto | None = None,
    weight: onnx.TensorProto | None = None,
    opsets: list[onnx.OperatorSetIdProto] | None = None,
    doc: str = "",
) -> bytes:
    """x[-1, 4] -> y = x @ W: a valid graph, or one with the given node/weight swapped in."""
    w = weight or helper.make_tensor(
        "W", onnx.TensorProto.FLOAT, [4, 3], np.ones(12, np.float32).tolist()
    )
    graph = helper.make_graph(
        [node or helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = doc
    blob: bytes = model.SerializeToString()
    return blob


def custom_op_graph() -> bytes:
    """A graph whose one operator lives in a custom domain (a native library's)."""
    node = helper.make_node("Steal", ["x", "W"], ["y"], domain="evil.ops")
    return tiny_graph(
        node, opsets=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)]
    )


def external_data_graph(location: str = "../../../etc/passwd") -> bytes:
    """A graph whose weight's bytes are to be read from a path outside its folder."""
    weight = onnx.TensorProto(name="W", data_type=onnx.TensorProto.FLOAT, dims=[4, 3])
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return tiny_graph(weight=weight)
