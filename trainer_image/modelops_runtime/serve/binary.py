"""The REST binary tensor extension (`binary_tensor_data`), as Triton defines it.

A request body is a JSON header followed by raw tensor bytes; the header's length
is in `Inference-Header-Content-Length`. An input carrying
`"parameters": {"binary_data_size": n}` takes its n bytes (flat, row-major,
little-endian) from the binary part instead of `data`. An output requested with
`"parameters": {"binary_data": true}` (or all outputs, with the request parameter
`binary_data_output`) comes back the same way: its JSON entry names
`binary_data_size` and the answer carries the header length in the same header.
BYTES elements are each prefixed by their 4-byte little-endian length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelops.api.artifact import ModelCard
from modelops_runtime.serve import protocol
from modelops_runtime.serve.errors import InvalidInput

HEADER = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class BinaryAnswer:
    """An infer answer with binary outputs: JSON header, then the raw tensors."""

    body: bytes
    header_length: int


def wants_binary(headers: dict[str, str], body: bytes) -> bool:
    """Whether a REST infer request uses the extension (the JSON-only path stays fastest)."""
    return HEADER in headers or b'"binary_data' in body


def _size(parameters: Any, where: str) -> int | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"{where}: 'binary_data_size' must be a non-negative integer")
    return size


def _flag(parameters: Any, key: str) -> bool:
    return isinstance(parameters, dict) and parameters.get(key) is True


class BinaryCodec:
    """One request under the extension (see InferCodec in dataplane.py)."""

    __slots__ = ("_binary_outputs", "_body", "_header", "_json_length")

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        text = headers.get(HEADER)
        if text is None:
            length = len(body)
        elif not text.isdigit() or int(text) > len(body):
            raise InvalidInput(f"{HEADER} must be a byte count within the body, got '{text}'")
        else:
            length = int(text)
        self._body = body
        self._json_length = length
        self._binary_outputs: set[str] | bool = False

    def decode(self, card: ModelCard) -> protocol.InferRequest:
        header = self._body[: self._json_length]
        payload = protocol.loads_object(header)
        binary: dict[int, bytes] = {}
        offset = self._json_length
        inputs = payload.get("inputs")
        if isinstance(inputs, list):
            for index, tensor in enumerate(inputs):
                if not isinstance(tensor, dict):
                    continue
                size = _size(tensor.get("parameters"), f"inputs[{index}]")
                if size is None:
                    continue
                if offset + size > len(self._body):
                    raise InvalidInput(f"inputs[{index}]: binary_data_size {size} runs past the body")
                binary[index] = self._body[offset : offset + size]
                offset += size
        if offset != len(self._body):
            raise InvalidInput(f"{len(self._body) - offset} bytes after the tensors the header names")
        request = protocol.decode_infer(header, card, binary)
        if _flag(payload.get("parameters"), "binary_data_output"):
            self._binary_outputs = True
        else:
            wanted = payload.get("outputs") or []
            self._binary_outputs = {
                o["name"] for o in wanted if _flag(o.get("parameters"), "binary_data")
            }
        return request

    def encode(
        self,
        card: ModelCard,
        model_version: str,
        request_id: str,
        outputs: protocol.Outputs,
        requested: tuple[str, ...] | None,
    ) -> bytes | BinaryAnswer:
        tensors: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for spec in card.outputs:
            if requested is not None and spec.name not in requested:
                continue
            values = protocol.output_values(spec, outputs, card)
            shape = [len(values)] if isinstance(values, list) else list(values.shape)
            entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
            binary = self._binary_outputs is True or (
                isinstance(self._binary_outputs, set) and spec.name in self._binary_outputs
            )
            if not binary:
                entry["data"] = values if isinstance(values, list) else np.ascontiguousarray(values).ravel()
            else:
                if isinstance(values, list):
                    raw = b"".join(_LENGTH.pack(len(e)) + e for e in (v.encode() for v in values))
                else:
                    raw = np.ascontiguousarray(values, dtype=protocol.DTYPES[spec.datatype]).tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            tensors.append(entry)
        header = protocol.dumps(
            {"id": request_id, "model_name": card.name, "model_version": model_version, "outputs": tensors}
        )
        if not chunks:
            return header
        return BinaryAnswer(header + b"".join(chunks), len(header))
