"""Open Inference Protocol (KServe v2) JSON codec: bodies in, numpy out, and back.

Pure functions, no I/O. Decoding validates against the version's ModelCard and
raises InvalidInput with a message naming the field at fault. Encoding writes the
compact JSON the protocol allows (flat row-major `data`) straight from numpy with
orjson, because turning arrays into Python lists is the hot path's main cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelops.api.artifact import ModelCard, TensorSpec
from modelops_runtime.serve.errors import InvalidInput

# Numeric datatypes a client may send for an FP32 input; values are cast to float32.
NUMERIC = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
KNOWN = NUMERIC | {"BOOL", "BYTES"}
_NUMERIC_KINDS = frozenset("fiu")
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request: one batch of rows for the model's only input."""

    id: str | None
    rows: np.ndarray
    outputs: tuple[str, ...] | None


@dataclass(slots=True)
class Outputs:
    """What the model computed for one request's rows."""

    scores: np.ndarray
    predictions: np.ndarray


def loads_any(body: bytes, what: str = "request") -> Any:
    """Parse a JSON body or raise InvalidInput saying why not."""
    if not body:
        raise InvalidInput(f"{what} body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"{what} body is not valid JSON: {error}") from None


def loads_object(body: bytes, what: str = "request") -> dict[str, Any]:
    """Parse a JSON object body or raise InvalidInput saying why not."""
    payload = loads_any(body, what)
    if not isinstance(payload, dict):
        raise InvalidInput(f"{what} body must be a JSON object, not {type(payload).__name__}")
    return payload


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise InvalidInput(f"{where} is missing the field '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidInput(f"{where}: '{key}' must be {kind.__name__}, not {type(value).__name__}")
    return value


def _shape(value: list[Any], where: str) -> list[int]:
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise InvalidInput(f"{where}: 'shape' must be a list of non-negative integers, got {value}")
    return value


def _check_against(spec: TensorSpec, shape: list[int], where: str) -> None:
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise InvalidInput(f"{where}: shape {shape} does not match the model's {spec.shape}")
    if shape[0] == 0:
        raise InvalidInput(f"{where}: the batch dimension is 0; send at least one row")


# Little-endian element types of the binary forms (REST binary extension, gRPC raw contents).
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in (
        ("BOOL", "?"), ("INT8", "i1"), ("INT16", "i2"), ("INT32", "i4"), ("INT64", "i8"),
        ("UINT8", "u1"), ("UINT16", "u2"), ("UINT32", "u4"), ("UINT64", "u8"),
        ("FP16", "f2"), ("FP32", "f4"), ("FP64", "f8"),
    )
}


def check_input(card: ModelCard, name: str, datatype: str, shape: list[int]) -> str:
    """Validate an input tensor's header against the card; returns the `where` of messages."""
    spec = card.inputs[0]
    if name != spec.name:
        raise InvalidInput(f"unknown input '{name}'; this model takes '{spec.name}'")
    where = f"input '{name}'"
    if datatype not in KNOWN:
        raise InvalidInput(f"{where}: unknown datatype '{datatype}'")
    if datatype not in NUMERIC:
        raise InvalidInput(f"{where}: datatype {datatype} cannot feed {spec.datatype}; send numbers")
    _check_against(spec, _shape(shape, where), where)
    return where


def to_rows(array: np.ndarray, shape: list[int], where: str) -> np.ndarray:
    """The model's float32 rows from a flat numeric array of the declared shape."""
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(f"{where}: 'data' must hold only numbers")
    needed = math.prod(shape)
    if array.size != needed:
        raise InvalidInput(f"{where}: 'data' has {array.size} values but shape {shape} needs {needed}")
    rows = array.reshape(shape).astype(np.float32, copy=False)
    if array.dtype.kind == "f" and not np.isfinite(rows).all():
        raise InvalidInput(f"{where}: 'data' holds values outside the FP32 range")
    return rows


def from_raw(raw: bytes, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """Rows from a tensor's raw little-endian bytes (numeric datatypes only)."""
    dtype = DTYPES[datatype]
    needed = math.prod(shape) * dtype.itemsize
    if len(raw) != needed:
        raise InvalidInput(f"{where}: {len(raw)} raw bytes but shape {shape} of {datatype} needs {needed}")
    rows = to_rows(np.frombuffer(raw, dtype=dtype), shape, where)
    # A view of the message is read-only; torch wants tensors it could write to.
    return rows if rows.flags.writeable else rows.copy()


def decode_infer(body: bytes, card: ModelCard, binary: Mapping[int, bytes] | None = None) -> InferRequest:
    """Validate an infer body against the card and return its rows as float32.

    `binary`: the input's raw bytes when it came as a binary tensor (REST binary
    extension), keyed by input index; the JSON then names its size instead of `data`.
    """
    payload = loads_object(body)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, not {type(request_id).__name__}")
    inputs = _field(payload, "inputs", list, "request")
    spec = card.inputs[0]
    if len(inputs) != 1:
        raise InvalidInput(f"'inputs' must hold exactly one tensor ('{spec.name}'), got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InvalidInput(f"inputs[0] must be an object, not {type(tensor).__name__}")
    name = _field(tensor, "name", str, "inputs[0]")
    where = f"input '{name}'"
    datatype = _field(tensor, "datatype", str, where)
    shape = _field(tensor, "shape", list, where)
    check_input(card, name, datatype, shape)
    if binary is not None and 0 in binary:
        rows = from_raw(binary[0], datatype, shape, where)
    else:
        data = _field(tensor, "data", list, where)
        try:
            array = np.asarray(data)
        except (ValueError, TypeError):
            raise InvalidInput(f"{where}: 'data' is not a rectangular array of numbers") from None
        rows = to_rows(array, shape, where)
    return InferRequest(request_id, rows, _requested_outputs(payload, card))


def _requested_outputs(payload: dict[str, Any], card: ModelCard) -> tuple[str, ...] | None:
    wanted = payload.get("outputs")
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise InvalidInput("'outputs' must be a list of objects with a string 'name'")
    known = {spec.name for spec in card.outputs}
    for output in wanted:
        if output["name"] not in known:
            raise InvalidInput(f"unknown output '{output['name']}'; this model gives {sorted(known)}")
    return tuple(o["name"] for o in wanted)


def output_values(spec: TensorSpec, outputs: Outputs, card: ModelCard) -> np.ndarray | list[str]:
    """The array an output tensor carries, chosen by its datatype (names are free)."""
    if spec.datatype == "INT64":
        return outputs.predictions.astype(np.int64, copy=False)
    if spec.datatype == "BYTES":
        classes = card.classes or []
        indices = outputs.predictions.reshape(-1).tolist()
        return [classes[i] if 0 <= i < len(classes) else str(i) for i in indices]
    scores = outputs.scores
    if len(spec.shape) == 1 and scores.ndim == 2 and scores.shape[1] == 1:
        return scores[:, 0]  # a single value per row, served as a vector
    return scores


def encode_infer(
    card: ModelCard,
    model_version: str,
    request_id: str,
    outputs: Outputs,
    requested: tuple[str, ...] | None,
) -> bytes:
    """The infer response body: id, model name and version, and one entry per output."""
    tensors = []
    for spec in card.outputs:
        if requested is not None and spec.name not in requested:
            continue
        values = output_values(spec, outputs, card)
        shape = [len(values)] if isinstance(values, list) else list(values.shape)
        data = values if isinstance(values, list) else np.ascontiguousarray(values).ravel()
        tensors.append({"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data})
    return orjson.dumps(
        {"id": request_id, "model_name": card.name, "model_version": model_version, "outputs": tensors},
        option=_DUMPS_OPTIONS,
    )


def is_label_output(spec: TensorSpec, card: ModelCard) -> bool:
    """The per-row decision of a classifier: class index (INT64) or class name (BYTES)."""
    return bool(card.classes) and spec.datatype in ("INT64", "BYTES") and spec.shape == [-1]


def output_parameters(spec: TensorSpec, card: ModelCard) -> dict[str, Any]:
    """Parameters of an output in metadata: the class names behind a label output."""
    return {"classes": list(card.classes or [])} if is_label_output(spec, card) else {}


def model_metadata(card: ModelCard, versions: list[str]) -> dict[str, Any]:
    """The protocol's model metadata object."""
    return {
        "name": card.name,
        "versions": versions,
        "platform": "pytorch",
        "inputs": [spec.model_dump() for spec in card.inputs],
        "outputs": [
            {**spec.model_dump(), "parameters": params} if (params := output_parameters(spec, card))
            else spec.model_dump()
            for spec in card.outputs
        ],
        "parameters": {"task": str(card.task), "classes": card.classes or []},
    }


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=_DUMPS_OPTIONS)
