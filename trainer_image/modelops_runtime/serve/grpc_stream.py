"""Triton's bidirectional `ModelStreamInfer`: many infer requests on one gRPC call.

Each request on the stream is answered on the same data plane as a unary
ModelInfer (batching, routing by the call's metadata, metrics), concurrently, so
answers come back in the order they finish; the request's `id` (echoed in the
answer) is how a client pairs them, as with Triton. A request that fails gets a
ModelStreamInferResponse with `error_message` set (and the request's id) and the
stream goes on. The id feedback must name is the answer's `feedback_id`
parameter, since a stream has no per-answer trailing metadata.

At most WINDOW requests per stream are in flight or answered but not yet sent:
past that the stream is not read, so a client that sends without reading stalls
itself instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.errors import ServeError
from modelops_runtime.serve.grpc_codec import GrpcCodec
from modelops_runtime.serve.oip import pb2

WINDOW = 128

log = logging.getLogger(__name__)


class StreamCalls:
    """ModelStreamInfer on the data plane (mixed into the servicer)."""

    dataplane: DataPlane

    async def _answer(self, raw: bytes, headers: dict[str, str]) -> Any:
        request = None
        try:
            request = pb2.ModelInferRequest.FromString(raw)
            result = await self.dataplane.infer(
                request.model_name, request.model_version or None, b"", headers, GrpcCodec(request)
            )
            response = result.body
            response.parameters["feedback_id"].string_param = result.feedback_id
            return pb2.ModelStreamInferResponse(infer_response=response)
        except DecodeError:
            message = "not a valid inference.ModelInferRequest"
        except ServeError as error:
            message = error.message
        except Exception:  # a bug costs one error answer, never the stream
            log.exception("unhandled error in a streamed infer request")
            message = "internal server error"
        failed = pb2.ModelInferResponse()
        if request is not None:
            failed.id, failed.model_name = request.id, request.model_name
        return pb2.ModelStreamInferResponse(error_message=message, infer_response=failed)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        headers = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        answers: asyncio.Queue[Any] = asyncio.Queue()
        window = asyncio.Semaphore(WINDOW)
        done = object()

        async def one(raw: bytes) -> None:
            answers.put_nowait(await self._answer(raw, headers))

        async def read() -> None:
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for raw in requests:
                    await window.acquire()
                    task = asyncio.create_task(one(raw))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.gather(*tasks)
            finally:
                for task in list(tasks):  # the call ended early: nobody reads these answers
                    task.cancel()
                answers.put_nowait(done)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not done:
                yield answer
                window.release()
        finally:
            reader.cancel()
