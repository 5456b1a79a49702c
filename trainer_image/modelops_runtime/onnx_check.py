"""Reading an ONNX file as untrusted input: bounded, parsed as data, self-contained.

An ONNX file is a protobuf message: parsing it builds a graph description and runs no
code. What could still reach outside it is refused here, before ONNX Runtime sees it:
- tensors whose bytes live in external files (a path such as `../../etc/shadow`, read
  at session creation): a stored version is one file, so none are accepted;
- operators outside the standard domains (`ai.onnx`, `ai.onnx.ml`, and ONNX Runtime's
  built-in `com.microsoft`): a custom domain needs a native library registered with the
  session, which the server never does, so such a graph could not run anyway;
- files over a size bound (read no further than the bound, so a huge file costs no memory).
Every failure is an OnnxFileError naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError

from modelops_runtime import artifacts
from modelops_runtime.errors import ModelFileError

# Protobuf cannot hold more than 2 GiB; an MLP or a scikit-learn pipeline is far smaller.
DEFAULT_MAX_BYTES = 1 << 30
MAX_BYTES_ENV = "MODELOPS_MAX_MODEL_BYTES"
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


class OnnxFileError(ModelFileError):
    """An ONNX file that is not a loadable, self-contained model."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where


def max_bytes() -> int:
    """The size bound: MODELOPS_MAX_MODEL_BYTES, else 1 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "")
    if not text:
        return DEFAULT_MAX_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_BYTES_ENV}={text!r} is not a positive number of bytes")
    return int(text)


def read(uri: str, limit: int | None = None) -> bytes:
    """The bytes of the file at `uri` (file path or store URI), refusing one over `limit`."""
    limit = max_bytes() if limit is None else limit
    fs, path = artifacts.filesystem(uri if "://" in uri else os.path.abspath(uri))
    try:
        size = fs.size(path)
        if size is not None and size > limit:
            raise OnnxFileError(uri, f"{size} bytes is over the limit of {limit} ({MAX_BYTES_ENV})")
        with fs.open(path, "rb") as handle:
            blob: bytes = handle.read(limit + 1)
    except FileNotFoundError:
        raise OnnxFileError(uri, "no such file") from None
    except IsADirectoryError:
        raise OnnxFileError(uri, "is a folder, not an ONNX file") from None
    if len(blob) > limit:  # grew after the size check, or a store that reports no size
        raise OnnxFileError(uri, f"over the limit of {limit} bytes ({MAX_BYTES_ENV})")
    return blob


def parse(blob: bytes, where: str) -> onnx.ModelProto:
    """The model in `blob`, checked: well-formed, self-contained, standard operators only."""
    if not blob:
        raise OnnxFileError(where, "is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(blob)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise OnnxFileError(
            where, f"is not an ONNX model (malformed or truncated: {error})"
        ) from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxFileError(where, "has no graph (malformed or truncated)")
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise OnnxFileError(
                where,
                f"tensor '{tensor.name}' keeps its data in an external file '{location}'; "
                "only self-contained models are accepted (save with all tensors inside)",
            )
    local = {function.domain for function in model.functions}
    for node in _nodes(model):
        if node.domain not in STANDARD_DOMAINS and node.domain not in local:
            raise OnnxFileError(
                where,
                f"operator '{node.op_type}' is in the custom domain '{node.domain}'; only the "
                f"standard domains {sorted(d or 'ai.onnx' for d in STANDARD_DOMAINS)} can be served",
            )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise OnnxFileError(where, f"is not a valid ONNX model: {first}") from None
    return model


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """A graph and every subgraph (If branches, Loop and Scan bodies) inside it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every stored tensor: initializers, sparse ones, and tensors held in attributes."""
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _nodes(model):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            elif attribute.type == onnx.AttributeProto.TENSORS:
                yield from attribute.tensors
            elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
