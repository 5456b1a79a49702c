"""A version stored as ONNX (`weights_format: onnx`), served by ONNX Runtime.

The graph is the whole model: its first output is what `SingleModel.scores` returns
for a built-in network (probabilities for a classifier, values in target units
otherwise), for a batch of the card's one input. `modelops import` writes imported
models in that form. Loading parses the file as data (`onnx_check`) and builds an
ONNX Runtime session on the CPU; no Python from the store is imported or unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from modelops.api.artifact import ModelCard
from modelops_runtime import artifacts, onnx_check

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


@dataclass
class OnnxModel:
    """One ONNX graph behind the `Scorer` interface: numpy rows in, scores out."""

    card: ModelCard
    session: ort.InferenceSession
    input_name: str
    input_dtype: type[np.floating]
    output_name: str

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a classifier, values otherwise: FP32, one row per input row."""
        rows = np.ascontiguousarray(batch, dtype=self.input_dtype)
        out = np.asarray(self.session.run([self.output_name], {self.input_name: rows})[0])
        if out.ndim == 1:
            out = out[:, None]
        result: np.ndarray = out.astype(np.float32, copy=False)
        return result


def session_options() -> ort.SessionOptions:
    """One forward at a time on the server's forward thread, as many threads as torch uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: the event loop shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def session_of(blob: bytes, where: str) -> ort.InferenceSession:
    """A CPU session over checked bytes; ONNX Runtime's refusal becomes an OnnxFileError."""
    onnx_check.parse(blob, where)
    try:
        return ort.InferenceSession(blob, session_options(), providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime's errors share no base class but Exception
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise onnx_check.OnnxFileError(where, f"ONNX Runtime cannot load it: {first}") from None


def model_of(session: ort.InferenceSession, card: ModelCard, where: str) -> OnnxModel:
    """The served model of a session, checked against the card's one input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise onnx_check.OnnxFileError(where, f"has {len(inputs)} inputs; a served model has one")
    dtype = _DTYPES.get(inputs[0].type)
    if dtype is None:
        raise onnx_check.OnnxFileError(
            where,
            f"input '{inputs[0].name}' is {inputs[0].type}; a served model takes float or double",
        )
    return OnnxModel(card, session, inputs[0].name, dtype, session.get_outputs()[0].name)


def load_onnx(folder_uri: str, card: ModelCard) -> OnnxModel:
    """The version at `folder_uri` whose card says `weights_format: onnx`."""
    uri = artifacts.join(folder_uri, artifacts.ONNX)
    model = model_of(session_of(onnx_check.read(uri), uri), card, uri)
    shape = [1 if d == -1 else d for d in card.inputs[0].shape]
    try:
        probe = model.scores(np.zeros(shape, dtype=np.float32))
    except Exception as error:  # a graph that does not fit the card fails here, not on traffic
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise onnx_check.OnnxFileError(
            uri, f"fails on the card's input shape {card.inputs[0].shape}: {first}"
        ) from None
    if probe.shape != (1, card.n_outputs):
        raise onnx_check.OnnxFileError(
            uri, f"gives {list(probe.shape[1:])} outputs per row; the card says {card.n_outputs}"
        )
    return model
