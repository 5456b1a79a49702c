"""The gRPC calls of the model repository extension (see repository.py for what they do).

Load and unload need the admin token in the call metadata (`authorization: Bearer
<token>`), as the REST admin calls need it in their header; a missing or wrong one
is UNAUTHENTICATED. The index is read-only and open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc

from modelops_runtime.serve import repository
from modelops_runtime.serve.auth import TokenSource, authorize
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.oip import pb2

T = TypeVar("T")
Action = Callable[[DataPlane, str, Mapping[str, Any]], Awaitable[dict[str, Any]]]


def parameters(request: Any) -> dict[str, Any]:
    """A ModelRepositoryParameter map as plain values (unset ones left out)."""
    values = {}
    for key, parameter in request.parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is not None:
            values[key] = getattr(parameter, which)
    return values


def _authorization(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return ""


class RepositoryCalls:
    """RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload on the data plane."""

    dataplane: DataPlane
    token: TokenSource

    async def _call(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError  # the servicer's error translation

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def work() -> Any:
            entries = await repository.index(self.dataplane, request.ready)
            return pb2.RepositoryIndexResponse(
                models=[pb2.RepositoryIndexResponse.ModelIndex(**entry) for entry in entries]
            )

        return await self._call(context, work)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._admin(request, context, repository.load, pb2.RepositoryModelLoadResponse())

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._admin(request, context, repository.unload, pb2.RepositoryModelUnloadResponse())

    async def _admin(
        self, request: Any, context: grpc.aio.ServicerContext, action: Action, response: Any
    ) -> Any:
        """Check the token, run a load or unload, answer Triton's empty response."""
        async def work() -> Any:
            authorize(_authorization(context), self.token())
            await action(self.dataplane, request.model_name, parameters(request))
            return response

        return await self._call(context, work)
