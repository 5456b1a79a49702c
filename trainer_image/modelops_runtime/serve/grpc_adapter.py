"""The gRPC adapter: `inference.GRPCInferenceService` (Open Inference Protocol) on the data plane.

The same DataPlane as REST answers every call, so batching, routing (canary,
shadow, x-routing-key / x-request-id from the call's metadata), metrics and
feedback behave alike on both transports. Errors come from the one table in
`errors.py`: the HTTP status of a ServeError picks its gRPC code there.

Inputs arrive as typed `contents` or as `raw_input_contents`; the answer uses the
form the request used (raw in, raw out), as Triton and KServe servers do, which
is what their clients expect. The answering version is in `model_version` and in
the trailing metadata `x-model-version`; `x-feedback-id` there is the id that
feedback for this answer (REST /feedback) must name. Messages over the REST body limit are
refused by gRPC itself with RESOURCE_EXHAUSTED (`grpc.max_receive_message_length`).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
import orjson
from google.protobuf.message import DecodeError

from modelops.api.artifact import ModelCard
from modelops_runtime.serve import protocol
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.errors import GRPC_CODES, InvalidInput, ServeError
from modelops_runtime.serve.oip import pb2, pb2_grpc

SERVICE = "inference.GRPCInferenceService"

log = logging.getLogger(__name__)

T = TypeVar("T")

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


def _parameter(value: Any) -> Any:
    """A metadata value as an InferParameter; lists travel as JSON strings."""
    if isinstance(value, bool):
        return pb2.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb2.InferParameter(int64_param=value)
    if isinstance(value, str):
        return pb2.InferParameter(string_param=value)
    return pb2.InferParameter(string_param=orjson.dumps(value).decode())


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


def tensor_metadata(entry: dict[str, Any]) -> Any:
    meta = pb2.ModelMetadataResponse.TensorMetadata(
        name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]
    )
    for key, value in entry.get("parameters", {}).items():
        meta.parameters[key].CopyFrom(_parameter(value))
    return meta


class InferenceServicer(pb2_grpc.GRPCInferenceServiceServicer):
    """The six calls of the protocol, each a thin translation onto the DataPlane."""

    def __init__(self, dataplane: DataPlane, server_name: str, server_version: str, extensions: list[str]):
        self.dataplane = dataplane
        self._server = (server_name, server_version, extensions)

    async def _call(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]) -> T:
        try:
            return await work()
        except ServeError as error:
            code = grpc.StatusCode[GRPC_CODES.get(error.status, "INTERNAL")]
            await context.abort(code, error.message)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:  # a bug costs one INTERNAL answer, never the server
            log.exception("unhandled error in a gRPC call")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        raise AssertionError("unreachable: abort raises")

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb2.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work() -> Any:
            ready = self.dataplane.model_ready(request.name, request.version or None)
            return pb2.ModelReadyResponse(ready=ready)

        return await self._call(context, work)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        name, version, extensions = self._server
        return pb2.ServerMetadataResponse(name=name, version=version, extensions=extensions)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work() -> Any:
            meta = self.dataplane.metadata(request.name, request.version or None)
            response = pb2.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor_metadata(i) for i in meta["inputs"]],
                outputs=[tensor_metadata(o) for o in meta["outputs"]],
            )
            for key, value in meta.get("parameters", {}).items():
                response.parameters[key].CopyFrom(_parameter(value))
            return response

        return await self._call(context, work)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work() -> Any:
            headers = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            result = await self.dataplane.infer(
                request.model_name, request.model_version or None, b"", headers, GrpcCodec(request)
            )
            context.set_trailing_metadata(
                (("x-model-version", result.version), ("x-feedback-id", result.feedback_id))
            )
            return result.body

        return await self._call(context, work)


    def handlers(self) -> grpc.GenericRpcHandler:
        """Method handlers that parse requests themselves.

        gRPC's own deserializer answers INTERNAL to bytes that are not the message;
        parsing here answers INVALID_ARGUMENT, as for any other bad request.
        """
        service = pb2.DESCRIPTOR.services_by_name[SERVICE.rsplit(".", 1)[1]]
        methods = {}
        for method in service.methods:
            request_type = getattr(pb2, method.input_type.name)
            response_type = getattr(pb2, method.output_type.name)
            methods[method.name] = grpc.unary_unary_rpc_method_handler(
                self._parsing(getattr(self, method.name), request_type),
                response_serializer=response_type.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    @staticmethod
    def _parsing(
        call: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], request_type: Any
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                request = request_type.FromString(raw)
            except DecodeError:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {request_type.DESCRIPTOR.full_name}"
                )
            return await call(request, context)

        return handle


class GrpcServer:
    """The gRPC listener beside the HTTP one, on its own port."""

    def __init__(
        self, dataplane: DataPlane, *, max_message: int, server_name: str, server_version: str,
        extensions: list[str],
    ) -> None:
        self.servicer = InferenceServicer(dataplane, server_name, server_version, extensions)
        self.max_message = max_message
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        server = grpc.aio.server(
            options=[
                # The same bound as a REST body: a larger message is RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", self.max_message),
                ("grpc.max_send_message_length", -1),
                # Two servers must never share a port silently.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.servicer.handlers(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = server.add_insecure_port(address)
        await server.start()
        self._server = server
        return bound

    async def close(self, grace_s: float) -> None:
        """Refuse new calls, let those in flight finish for up to grace_s."""
        if self._server is not None:
            await self._server.stop(grace_s)
