"""The REST adapter: Open Inference Protocol paths onto the data plane.

Paths (KServe v2 REST, plus feedback, admin and metrics):

    GET  /v2/health/live                          200 while the process runs
    GET  /v2/health/ready                         200 once the stable version answers, else 503
    GET  /v2                                      server metadata
    GET  /v2/models/{name}[/versions/{v}]         model metadata (inputs, outputs, datatypes)
    GET  /v2/models/{name}[/versions/{v}]/ready   200 or 503
    POST /v2/models/{name}[/versions/{v}]/infer   inference; header x-model-version says who answered,
                                                  x-feedback-id the id its feedback must name
    POST /v2/models/{name}/feedback               {"id": <x-feedback-id>, "labels": [...]} or a list;
                                                  each id is accepted once
    GET  /v2/admin/routing                        split, loaded versions, accuracy, shadow agreement
    PUT  /v2/admin/routing                        {"stable", "candidate", "weight", "shadow"}
    POST /v2/admin/load                           {"version"} or {"members", "method", "version"}; "role"
    POST /v2/repository/index                     stored and loaded versions (Triton's repository extension)
    POST /v2/repository/models/{name}/load        hot swap (see repository.py), admin
    POST /v2/repository/models/{name}/unload      drop the candidate, admin
    GET  /metrics                                 Prometheus exposition

Admin calls need `Authorization: Bearer <token>` when a token is configured (auth.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from modelops_runtime.serve import repository
from modelops_runtime.serve.auth import TokenSource, admin_token, authorize
from modelops_runtime.serve.binary import HEADER, BinaryAnswer, BinaryCodec, wants_binary
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.errors import MethodNotAllowed, NotFound, ServeError
from modelops_runtime.serve.http import Request, Response
from modelops_runtime.serve.metrics import CONTENT_TYPE
from modelops_runtime.serve.peers import FORWARDED
from modelops_runtime.serve.protocol import dumps

SERVER_NAME = "modelops"
SERVER_VERSION = "0.1.0"
# Protocol extensions both transports announce in server metadata.
EXTENSIONS = ["binary_tensor_data", repository.EXTENSION]

_REPOSITORY_MODELS = "/v2/repository/models/"
_LIVE = dumps({"live": True})
_READY = dumps({"ready": True})
_NOT_READY = dumps({"ready": False})


def error_body(error: ServeError) -> Response:
    return Response(error.status, dumps({"error": error.message}), headers=error.headers())


def _allow(request: Request, method: str) -> None:
    if request.method != method:
        raise MethodNotAllowed(request.method, method)


class RestAdapter:
    """Routes HTTP requests to a DataPlane."""

    def __init__(self, dataplane: DataPlane, token: TokenSource = admin_token) -> None:
        self.dataplane = dataplane
        self._token = token
        self._fixed: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/v2/health/live": self._live,
            "/v2/health/ready": self._ready,
            "/v2": self._server_metadata,
            "/metrics": self._metrics,
            "/v2/admin/routing": self._routing,
            "/v2/admin/load": self._load,
            "/v2/repository/index": self._repository_index,
        }

    async def __call__(self, request: Request) -> Response:
        path = unquote(request.path) if "%" in request.path else request.path
        fixed = self._fixed.get(path.rstrip("/") or "/")
        if fixed is not None:
            return await fixed(request)
        if path.startswith("/v2/models/"):
            return await self._model(request, path[len("/v2/models/") :].strip("/").split("/"))
        if path.startswith(_REPOSITORY_MODELS):
            return await self._repository_model(request, path[len(_REPOSITORY_MODELS) :].strip("/").split("/"))
        raise NotFound(f"no such path: {request.path}")

    async def _model(self, request: Request, parts: list[str]) -> Response:
        name, version = parts[0], None
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        plane = self.dataplane
        if action == "infer":
            _allow(request, "POST")
            codec = BinaryCodec(request.body, request.headers) if wants_binary(request.headers, request.body) else None
            result = await plane.infer(name, version, request.body, request.headers, codec)
            headers = [("x-model-version", result.version), ("x-feedback-id", result.feedback_id)]
            if isinstance(result.body, BinaryAnswer):
                headers.append((HEADER, str(result.body.header_length)))
                return Response(200, result.body.body, "application/octet-stream", headers)
            return Response(200, result.body, headers=headers)
        if action == "":
            _allow(request, "GET")
            return Response(200, dumps(plane.metadata(name, version)))
        if action == "ready":
            _allow(request, "GET")
            ready = plane.model_ready(name, version)
            return Response(200 if ready else 503, dumps({"name": name, "ready": ready}))
        if action == "feedback" and version is None:
            _allow(request, "POST")
            forwarded = request.headers.get(FORWARDED) == "1"
            return Response(200, dumps(await plane.feedback(name, request.body, forwarded)))
        raise NotFound(f"no such path: {request.path}")

    async def _live(self, request: Request) -> Response:
        return Response(200, _LIVE)

    async def _ready(self, request: Request) -> Response:
        ready = self.dataplane.ready()
        return Response(200 if ready else 503, _READY if ready else _NOT_READY)

    async def _server_metadata(self, request: Request) -> Response:
        return Response(200, dumps({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}))

    async def _metrics(self, request: Request) -> Response:
        _allow(request, "GET")
        return Response(200, self.dataplane.metrics.exposition(), content_type=CONTENT_TYPE)

    def _authorize(self, request: Request) -> None:
        authorize(request.headers.get("authorization", ""), self._token())

    async def _routing(self, request: Request) -> Response:
        self._authorize(request)
        if request.method == "GET":
            return Response(200, dumps(self.dataplane.routing_state()))
        if request.method != "PUT":
            raise MethodNotAllowed(request.method, "GET, PUT")
        return Response(200, dumps(await self.dataplane.set_routing(request.body)))

    async def _load(self, request: Request) -> Response:
        self._authorize(request)
        _allow(request, "POST")
        return Response(200, dumps(await self.dataplane.load(request.body)))

    async def _repository_index(self, request: Request) -> Response:
        _allow(request, "POST")
        ready_only = repository.rest_index_ready(request.body)
        return Response(200, dumps(await repository.index(self.dataplane, ready_only)))

    async def _repository_model(self, request: Request, parts: list[str]) -> Response:
        if len(parts) != 2 or parts[1] not in ("load", "unload"):
            raise NotFound(f"no such path: {request.path}")
        name, action = parts
        _allow(request, "POST")
        self._authorize(request)
        parameters = repository.rest_parameters(request.body, action)
        call = repository.load if action == "load" else repository.unload
        return Response(200, dumps(await call(self.dataplane, name, parameters)))
