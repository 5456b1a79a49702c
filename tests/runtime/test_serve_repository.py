"""The model repository extension (Triton's) on both transports, and gRPC server reflection,
driven by clients nobody here wrote: tritonclient (HTTP and gRPC) and grpc_reflection's own
descriptor database.

Repository load is a hot swap and unload drops the candidate, so both need the admin token;
the index is open. The server is a real `serve` process with both ports and a token; the
store holds versions 1-3 and a stored ensemble 4 (serve_helpers.make_store).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.runtime.serve_helpers import N_FEATURES, GrpcServerProcess, make_store, serve_m

pytestmark = pytest.mark.runtime

TOKEN = "repository-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServerProcess]:
    store = make_store(tmp_path_factory.mktemp("store"))
    with serve_m(store, tmp_path_factory.mktemp("logs") / "server.log", {"MODELOPS_ADMIN_TOKEN": TOKEN}) as process:
        yield process


@pytest.fixture(scope="module")
def grpc_client(server: GrpcServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc) as c:
        yield c


@pytest.fixture(scope="module")
def http_client(server: GrpcServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.url.removeprefix("http://")) as c:
        yield c


@pytest.fixture
def stable_1(server: GrpcServerProcess) -> None:
    """Each test starts from stable version 1 and no candidate (through the admin API)."""
    reply = httpx.put(f"{server.url}/v2/admin/routing", json={"stable": "1", "candidate": None},
                      headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text


def _routing(server: GrpcServerProcess) -> dict[str, Any]:
    state = httpx.get(f"{server.url}/v2/admin/routing", headers=AUTH).json()
    return state["routing"]  # type: ignore[no-any-return]


def _answering(client: grpcclient.InferenceServerClient) -> str:
    tensor = grpcclient.InferInput("input", [1, N_FEATURES], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, N_FEATURES), np.float32))
    return str(client.infer("m", [tensor]).get_response().model_version)


def _eventually(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _config(*versions: int) -> str:
    return json.dumps({"version_policy": {"specific": {"versions": list(versions)}}})


def _status(call: Any, *args: Any, **kwargs: Any) -> str:
    """The status tritonclient reports for a failing call ('' when it succeeds)."""
    try:
        call(*args, **kwargs)
    except InferenceServerException as error:
        return str(error.status())
    return ""


# -- index ------------------------------------------------------------------------


def test_index_lists_stored_and_loaded_versions(
    server: GrpcServerProcess, stable_1: None, grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    """No token needed; the stable version is READY, the other stored ones UNAVAILABLE."""
    expected = [{"name": "m", "version": "1", "state": "READY"}] + [
        {"name": "m", "version": v, "state": "UNAVAILABLE", "reason": "not loaded"} for v in ("2", "3", "4")
    ]
    _eventually(lambda: http_client.get_model_repository_index() == expected)  # retired in the background
    assert grpc_client.get_model_repository_index(as_json=True) == {"models": expected}
    ready = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True})
    assert ready.json() == expected[:1]
    request = service_pb2.RepositoryIndexRequest(ready=True)
    with grpc.insecure_channel(server.grpc) as channel:
        raw = channel.unary_unary(f"/{SERVICE}/RepositoryIndex")(request.SerializeToString(), timeout=10)
    assert [m.version for m in service_pb2.RepositoryIndexResponse.FromString(raw).models] == ["1"]
    assert "model_repository" in grpc_client.get_server_metadata(as_json=True)["extensions"]
    assert "model_repository" in http_client.get_server_metadata()["extensions"]


# -- load and unload ----------------------------------------------------------------


def test_load_and_unload_need_the_admin_token(
    server: GrpcServerProcess, stable_1: None, grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        assert _status(grpc_client.load_model, "m", headers=headers, config=_config(2)) == \
            "StatusCode.UNAUTHENTICATED"
        assert _status(grpc_client.unload_model, "m", headers=headers) == "StatusCode.UNAUTHENTICATED"
        assert _status(http_client.load_model, "m", headers=headers, config=_config(2)) == "401"
        assert _status(http_client.unload_model, "m", headers=headers) == "401"
    assert _routing(server) == {"stable": "1", "candidate": None, "weight": 0.0, "shadow": False}
    assert _answering(grpc_client) == "1"


def test_grpc_load_is_a_hot_swap(
    server: GrpcServerProcess, stable_1: None, grpc_client: grpcclient.InferenceServerClient
) -> None:
    """A version policy naming one version swaps to it; no config means the newest version."""
    grpc_client.load_model("m", headers=AUTH, config=_config(2))
    assert _answering(grpc_client) == "2" and grpc_client.is_model_ready("m", "2")
    grpc_client.load_model("m", headers=AUTH)  # Triton's default policy: the latest version
    assert _answering(grpc_client) == "4" and _routing(server)["stable"] == "4"
    latest = json.dumps({"version_policy": {"latest": {"num_versions": 1}}})
    grpc_client.load_model("m", headers=AUTH, config=latest)  # already serving: a no-op
    assert _answering(grpc_client) == "4"


def test_http_load_candidate_then_unload(
    server: GrpcServerProcess, stable_1: None, http_client: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    """Admin load fields ride as parameters; unload drops the candidate (a rollback)."""
    reply = httpx.post(f"{server.url}/v2/repository/models/m/load", headers=AUTH,
                       json={"parameters": {"version": 3, "role": "candidate", "shadow": True}})
    assert reply.status_code == 200, reply.text
    assert _routing(server) == {"stable": "1", "candidate": "3", "weight": 0.0, "shadow": True}
    states = {e["version"]: e["state"] for e in http_client.get_model_repository_index()}
    assert states["1"] == states["3"] == "READY"
    http_client.unload_model("m", headers=AUTH)
    assert _routing(server)["candidate"] is None
    http_client.unload_model("m", headers=AUTH)  # nothing left to unload: still a success
    http_client.load_model("m", headers=AUTH, config=_config(2))
    assert _routing(server)["stable"] == "2" and _answering(grpc_client) == "2"


def test_grpc_unload_names_the_candidate(server: GrpcServerProcess, stable_1: None) -> None:
    """Triton's own messages, with the `version` parameter tritonclient has no argument for."""
    httpx.post(f"{server.url}/v2/repository/models/m/load", headers=AUTH,
               json={"parameters": {"version": "2", "role": "candidate", "weight": 30}}).raise_for_status()
    metadata = tuple(AUTH.items())

    def unload(version: str) -> grpc.StatusCode:
        request = service_pb2.RepositoryModelUnloadRequest(model_name="m")
        request.parameters["version"].string_param = version
        with grpc.insecure_channel(server.grpc) as channel:
            call = channel.unary_unary(f"/{SERVICE}/RepositoryModelUnload")
            try:
                call(request.SerializeToString(), metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                return error.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    assert unload("1") == grpc.StatusCode.FAILED_PRECONDITION  # the stable version
    assert unload("3") == grpc.StatusCode.NOT_FOUND  # not loaded
    assert _routing(server)["candidate"] == "2"
    assert unload("2") == grpc.StatusCode.OK
    assert _routing(server) == {"stable": "1", "candidate": None, "weight": 0.0, "shadow": False}


def test_errors_are_client_errors(
    server: GrpcServerProcess, stable_1: None, grpc_client: grpcclient.InferenceServerClient,
    http_client: httpclient.InferenceServerClient,
) -> None:
    """Unknown model or version: 404 / NOT_FOUND; a request that cannot apply: 400 / INVALID_ARGUMENT."""
    cases = {
        "unknown model": ("nope", None, "404", "NOT_FOUND"),
        "unknown version": ("m", _config(99), "404", "NOT_FOUND"),
        "two versions": ("m", _config(1, 2), "400", "INVALID_ARGUMENT"),
        "all versions": ("m", json.dumps({"version_policy": {"all": {}}}), "400", "INVALID_ARGUMENT"),
        "other config": ("m", json.dumps({"max_batch_size": 8}), "400", "INVALID_ARGUMENT"),
        "not JSON": ("m", "{", "400", "INVALID_ARGUMENT"),
    }
    for what, (name, config, http_status, grpc_code) in cases.items():
        assert _status(http_client.load_model, name, headers=AUTH, config=config) == http_status, what
        assert _status(grpc_client.load_model, name, headers=AUTH, config=config) == \
            f"StatusCode.{grpc_code}", what
    files = {"file:1/model.pt": b"weights"}
    assert _status(grpc_client.load_model, "m", headers=AUTH, config="{}", files=files) == \
        "StatusCode.INVALID_ARGUMENT"
    assert _status(http_client.unload_model, "nope", headers=AUTH) == "404"
    raw = {
        "/v2/repository/models/m/load": [b"[1]", b'{"parameters": 3}', b'{"other": 1}',
                                         b'{"parameters": {"version": "x"}}', b'{"parameters": {"role": "boss"}}'],
        "/v2/repository/index": [b'{"ready": "yes"}', b"nope"],
    }
    for path, bodies in raw.items():
        for body in bodies:
            reply = httpx.post(f"{server.url}{path}", content=body, headers=AUTH)
            assert reply.status_code == 400, (path, body, reply.text)
    assert httpx.get(f"{server.url}/v2/repository/index").status_code == 405
    assert httpx.post(f"{server.url}/v2/repository/models/m/reload", headers=AUTH).status_code == 404
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.unary_unary(f"/{SERVICE}/RepositoryModelLoad")
        with pytest.raises(grpc.RpcError) as error:
            call(b"\xff\xff\xff", metadata=tuple(AUTH.items()), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _routing(server)["stable"] == "1"


def test_random_parameters_never_internal(server: GrpcServerProcess, stable_1: None) -> None:
    """Random load/unload parameters over gRPC: an answer or a client error, never INTERNAL."""
    rng = np.random.default_rng(5)
    keys = ["version", "role", "weight", "shadow", "members", "method", "config", "unload_dependents", "x",
            "file:a"]
    values: list[Any] = [0, 1, 2, 99, -1, "", "1", "latest", "candidate", "stable", "1,2", "1:30,2:70",
                         "mean", "weighted", "{}", '{"version_policy": {"specific": {"versions": ["2"]}}}',
                         True, False, b"\xff", 1 << 62, "x" * 300]
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
               grpc.StatusCode.FAILED_PRECONDITION}
    seen: dict[str, int] = {}
    with grpc.insecure_channel(server.grpc) as channel:
        for i in range(160):
            kind = "Load" if rng.random() < 0.6 else "Unload"
            request = getattr(service_pb2, f"RepositoryModel{kind}Request")(model_name="m")
            for _ in range(int(rng.integers(0, 4))):
                value = values[int(rng.integers(0, len(values)))]
                parameter = request.parameters[str(rng.choice(keys))]
                if isinstance(value, bool):
                    parameter.bool_param = value
                elif isinstance(value, int):
                    parameter.int64_param = value
                elif isinstance(value, bytes):
                    parameter.bytes_param = value
                else:
                    parameter.string_param = value
            call = channel.unary_unary(f"/{SERVICE}/RepositoryModel{kind}")
            try:
                call(request.SerializeToString(), metadata=tuple(AUTH.items()), timeout=60)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            seen[code.name] = seen.get(code.name, 0) + 1
            assert code in allowed, (i, code, request)
    assert seen.get("OK", 0) > 10 and seen.get("INVALID_ARGUMENT", 0) > 10, seen
    assert server.ready()


def test_swap_under_load_drops_nothing(server: GrpcServerProcess, stable_1: None) -> None:
    """Repository loads while tritonclient's asyncio client keeps inferring: every call answers."""
    async def run() -> list[str]:
        async with aioclient.InferenceServerClient(server.grpc) as c:
            answered: list[str] = []
            stop = asyncio.Event()

            async def stream() -> None:
                tensor = aioclient.InferInput("input", [1, N_FEATURES], "FP32")
                tensor.set_data_from_numpy(np.ones((1, N_FEATURES), np.float32))
                while not stop.is_set():
                    answered.append((await c.infer("m", [tensor])).get_response().model_version)

            streams = [asyncio.create_task(stream()) for _ in range(16)]
            for version in (2, 3, 1):
                await asyncio.sleep(0.3)
                await c.load_model("m", headers=AUTH, config=_config(version))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*streams)  # a failed call raises here
            return answered

    answered = asyncio.run(run())
    assert {"1", "2", "3"} <= set(answered) and answered[-1] == "1", set(answered)


# -- reflection -------------------------------------------------------------------------


def test_reflection_lists_and_describes_the_service(server: GrpcServerProcess) -> None:
    """grpc_reflection's own client finds the service and every message it uses."""
    with grpc.insecure_channel(server.grpc) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE, "grpc.reflection.v1alpha.ServerReflection"} <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
        assert methods["ModelInfer"] == ("inference.ModelInferRequest", "inference.ModelInferResponse")
        assert methods["RepositoryModelLoad"][0] == "inference.RepositoryModelLoadRequest"
        request = pool.FindMessageTypeByName("inference.ModelInferRequest")
        assert request.fields_by_name["raw_input_contents"].number == 7
        with pytest.raises(KeyError):
            pool.FindServiceByName("inference.NoSuchService")
