"""OIP gRPC tensors: a ModelInferRequest decoded against the ModelCard, its answer encoded.

Inputs arrive as typed `contents` or as `raw_input_contents`; the answer uses the
form the request used (raw in, raw out), as Triton and KServe servers do, which
is what their clients expect. Shared by ModelInfer and ModelStreamInfer.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from modelops.api.artifact import ModelCard
from modelops_runtime.serve import protocol
from modelops_runtime.serve.errors import InvalidInput
from modelops_runtime.serve.oip import pb2

# Typed contents field and numpy type of each datatype (FP16 travels only as raw bytes).
_CONTENTS: dict[str, tuple[str, type]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", object),
}
_LENGTH = struct.Struct("<I")


def _bytes_elements(values: list[str]) -> list[bytes]:
    return [v.encode() for v in values]


class GrpcCodec:
    """One ModelInferRequest in, its ModelInferResponse out (see InferCodec)."""

    __slots__ = ("_raw", "_request")

    def __init__(self, request: Any) -> None:
        self._request = request
        self._raw = False

    def decode(self, card: ModelCard) -> protocol.InferRequest:
        request = self._request
        spec = card.inputs[0]
        if len(request.inputs) != 1:
            raise InvalidInput(
                f"'inputs' must hold exactly one tensor ('{spec.name}'), got {len(request.inputs)}"
            )
        tensor = request.inputs[0]
        shape = list(tensor.shape)
        where = protocol.check_input(card, tensor.name, tensor.datatype, shape)
        raw = request.raw_input_contents
        if raw:
            if len(raw) != len(request.inputs):
                raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
            if tensor.HasField("contents"):
                raise InvalidInput(f"{where}: give raw_input_contents or contents, not both")
            self._raw = True
            rows = protocol.from_raw(raw[0], tensor.datatype, shape, where)
        else:
            if tensor.datatype == "FP16":
                raise InvalidInput(f"{where}: FP16 tensors travel in raw_input_contents")
            field, kind = _CONTENTS[tensor.datatype]
            rows = protocol.to_rows(np.asarray(getattr(tensor.contents, field), dtype=kind), shape, where)
        requested = tuple(o.name for o in request.outputs) or None
        if requested is not None:
            known = {s.name for s in card.outputs}
            for name in requested:
                if name not in known:
                    raise InvalidInput(f"unknown output '{name}'; this model gives {sorted(known)}")
        return protocol.InferRequest(request.id or None, rows, requested)

    def encode(
        self,
        card: ModelCard,
        model_version: str,
        request_id: str,
        outputs: protocol.Outputs,
        requested: tuple[str, ...] | None,
    ) -> Any:
        response = pb2.ModelInferResponse(model_name=card.name, model_version=model_version, id=request_id)
        for spec in card.outputs:
            if requested is not None and spec.name not in requested:
                continue
            values = protocol.output_values(spec, outputs, card)
            tensor = response.outputs.add(name=spec.name, datatype=spec.datatype)
            if isinstance(values, list):
                elements = _bytes_elements(values)
                tensor.shape.append(len(elements))
                if self._raw:
                    response.raw_output_contents.append(
                        b"".join(_LENGTH.pack(len(e)) + e for e in elements)
                    )
                else:
                    tensor.contents.bytes_contents.extend(elements)
                continue
            array = np.ascontiguousarray(values, dtype=protocol.DTYPES[spec.datatype])
            tensor.shape.extend(array.shape)
            if self._raw:
                response.raw_output_contents.append(array.tobytes())
            else:
                getattr(tensor.contents, _CONTENTS[spec.datatype][0]).extend(array.ravel().tolist())
        return response
