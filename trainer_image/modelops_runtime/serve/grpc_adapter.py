"""The gRPC adapter: `inference.GRPCInferenceService` (Open Inference Protocol) on the data plane.

The same DataPlane as REST answers every call, so batching, routing (canary,
shadow, x-routing-key / x-request-id from the call's metadata), metrics and
feedback behave alike on both transports. Errors come from the one table in
`errors.py`: the HTTP status of a ServeError picks its gRPC code there.

Tensors are decoded and encoded in `grpc_codec.py`. The answering version is in `model_version` and in
the trailing metadata `x-model-version`; `x-feedback-id` there is the id that
feedback for this answer (REST /feedback) must name. Messages over the REST body limit are
refused by gRPC itself with RESOURCE_EXHAUSTED (`grpc.max_receive_message_length`).
The repository extension's calls are in `grpc_repository.py`, Triton's streaming
ModelStreamInfer in `grpc_stream.py`; server reflection
(grpc.reflection.v1alpha) lists the service for grpcurl-style clients.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson
from google.protobuf.message import DecodeError
from grpc_reflection.v1alpha import reflection

from modelops_runtime.serve.auth import TokenSource, admin_token
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.errors import GRPC_CODES, ServeError
from modelops_runtime.serve.grpc_codec import GrpcCodec
from modelops_runtime.serve.grpc_repository import RepositoryCalls
from modelops_runtime.serve.grpc_stream import StreamCalls
from modelops_runtime.serve.oip import pb2, pb2_grpc

SERVICE = "inference.GRPCInferenceService"

log = logging.getLogger(__name__)

T = TypeVar("T")


def _parameter(value: Any) -> Any:
    """A metadata value as an InferParameter; lists travel as JSON strings."""
    if isinstance(value, bool):
        return pb2.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb2.InferParameter(int64_param=value)
    if isinstance(value, str):
        return pb2.InferParameter(string_param=value)
    return pb2.InferParameter(string_param=orjson.dumps(value).decode())


def tensor_metadata(entry: dict[str, Any]) -> Any:
    meta = pb2.ModelMetadataResponse.TensorMetadata(
        name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]
    )
    for key, value in entry.get("parameters", {}).items():
        meta.parameters[key].CopyFrom(_parameter(value))
    return meta


class InferenceServicer(RepositoryCalls, StreamCalls, pb2_grpc.GRPCInferenceServiceServicer):
    """The calls of the protocol, each a thin translation onto the DataPlane."""

    def __init__(
        self, dataplane: DataPlane, server_name: str, server_version: str, extensions: list[str],
        token: TokenSource = admin_token,
    ) -> None:
        self.dataplane = dataplane
        self.token = token
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
            if method.client_streaming:  # ModelStreamInfer parses each message itself
                methods[method.name] = grpc.stream_stream_rpc_method_handler(
                    getattr(self, method.name), response_serializer=response_type.SerializeToString
                )
                continue
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
        reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = server.add_insecure_port(address)
        await server.start()
        self._server = server
        return bound

    async def close(self, grace_s: float) -> None:
        """Refuse new calls, let those in flight finish for up to grace_s."""
        if self._server is not None:
            await self._server.stop(grace_s)
