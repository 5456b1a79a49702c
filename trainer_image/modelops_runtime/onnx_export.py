"""A trained network as a self-contained ONNX graph: what a custom network's version serves.

The graph is the whole of `SingleModel.scores_tensor`: input standardisation, the network,
and the output step (softmax or sigmoid of a classifier, target scaling undone for
regression and forecasting), with the statistics baked in as constants. So the server
(`onnx_predictor`) needs neither the user's code nor the scaling tensors, and a version
answers exactly as the network did in training. The batch dimension is dynamic.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from modelops.api.artifact import ModelCard
from modelops_runtime import artifacts
from modelops_runtime.predictor import SingleModel
from modelops_runtime.usercode import UserCodeError

# Opset 18 is what the dynamo exporter writes natively (no version conversion), and what
# current ONNX Runtime releases run in full.
OPSET = 18
# The exporter specialises a dimension whose example size is 1; two rows keep it dynamic.
_EXAMPLE_ROWS = 2


class _Scores(nn.Module):
    """`member.scores_tensor` as a module: the network is a registered child (its weights
    become graph initialisers) and the scaling tensors are buffers (constants)."""

    def __init__(self, member: SingleModel) -> None:
        super().__init__()
        self.member = member
        self.network = member.network
        for name, tensor in member.scaling.items():
            self.register_buffer(name.replace(".", "_"), tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member.scores_tensor(x)


def _factory(card: ModelCard) -> str:
    return repr(card.spec.factory) if card.spec is not None else "(none)"


def to_onnx(member: SingleModel) -> bytes:
    """The member's scores as ONNX bytes, one input named `input`, one output `scores`."""
    card: ModelCard = member.card
    example_shape = [_EXAMPLE_ROWS if size == -1 else size for size in card.inputs[0].shape]
    example = torch.zeros(example_shape, dtype=torch.float32)
    module = _Scores(member).eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    # The exporter logs its progress and warns about choices it made for us; a trainer's
    # log should carry the result, not the exporter's narration.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(  # the dynamo exporter: torch.export, then ONNX
                module,
                (example,),
                dynamo=True,
                input_names=["input"],
                output_names=["scores"],
                dynamic_shapes={"x": {0: batch}},
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
        except Exception as error:  # the exporter's errors share no base class
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:500]
            raise UserCodeError(
                f"the network of model.factory {_factory(card)} cannot be exported to ONNX "
                f"(torch.export needs a forward pass without data-dependent Python control "
                f"flow): {first}"
            ) from error
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    blob: bytes = program.model_proto.SerializeToString()
    return blob


def save(folder: str, member: SingleModel) -> bytes:
    """Write `model.onnx` into the version folder; returns the bytes written."""
    blob = to_onnx(member)
    fs, path = artifacts.filesystem(artifacts.join(folder, artifacts.ONNX))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(blob)
    return blob
