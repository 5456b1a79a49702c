"""The Open Inference Protocol over real gRPC (and REST binary tensors), driven by clients
nobody here wrote: tritonclient (HTTP and gRPC, sync and async) and the KServe SDK.

The server is a real `serve` process with both ports. Clients build their messages from
their own copy of the protocol, so a field that differs from the published one fails here.
The KServe SDK runs in a child process: its generated messages and tritonclient's declare
the same `inference.*` names, which one protobuf descriptor pool cannot hold twice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from modelops.api.artifact import TensorSpec
from modelops_runtime import artifacts
from modelops_runtime.predictor import Predictor, load_predictor
from tests.runtime.serve_helpers import (
    N_FEATURES,
    ServerProcess,
    classifier_card,
    free_port,
    metric_values,
    save_classifier,
)

pytestmark = pytest.mark.runtime

CLASSES = [f"class-{chr(97 + i)}" for i in range(10)]  # string labels: served as BYTES
MAX_BODY = 256 * 1024
# NOT_FOUND: a flipped byte may rename the model.
OK_OR_CLIENT = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.NOT_FOUND}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `m` v1: a classifier trained on string labels (probabilities + BYTES label)."""
    store = f"file://{tmp_path_factory.mktemp('store')}"
    save_classifier(store, "m", 1)
    folder = artifacts.version_uri(store, "m", 1)
    card = classifier_card("m", 1, [128, 64]).model_copy(
        update={
            "classes": CLASSES,
            "outputs": [
                TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(CLASSES)]),
                TensorSpec(name="label", datatype="BYTES", shape=[-1]),
            ],
        }
    )
    tensors = artifacts.load_weights(artifacts.join(folder, artifacts.WEIGHTS))
    artifacts.save_version(artifacts.version_uri(store, "m", 2), card.model_copy(update={"version": 2}),
                           tensors, {}, None)
    return store


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    grpc_port = free_port()
    args = ["--store", store, "--model", "m", "--version", "2", "--grpc-port", str(grpc_port),
            "--max-batch-size", "32", "--max-wait-ms", "5", "--max-body-bytes", str(MAX_BODY)]
    with ServerProcess(args, log) as process:
        process.grpc = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
        yield process


@pytest.fixture(scope="module")
def model(store: str) -> Predictor:
    return load_predictor(artifacts.version_uri(store, "m", 2))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.grpc)  # type: ignore[attr-defined]
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[tuple[grpc.Channel, object]]:
    """A plain channel, for messages the client libraries would never build."""
    channel = grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", -1)])  # type: ignore[attr-defined]
    yield channel, _infer_call(channel)
    channel.close()


def _infer_call(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    # Bytes in, bytes out: the fuzz sends messages protobuf itself would refuse to build.
    return channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, N_FEATURES), dtype=np.float32)


def _expected(model: Predictor, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    scores = model.scores(rows)
    return scores, [CLASSES[i] for i in model.decide(scores)]


# -- health and metadata --------------------------------------------------------


def test_health_and_metadata(client: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("m") and client.is_model_ready("m", "2")
    assert not client.is_model_ready("m", "9")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "modelops" and "binary_tensor_data" in meta["extensions"]
    model_meta = client.get_model_metadata("m", as_json=True)
    assert model_meta["versions"] == ["2"]
    assert model_meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", str(N_FEATURES)]}]
    assert [(o["name"], o["datatype"]) for o in model_meta["outputs"]] == [
        ("probabilities", "FP32"), ("label", "BYTES")
    ]
    with pytest.raises(grpcclient.InferenceServerException) as error:
        client.get_model_metadata("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_metadata_lists_class_names(server: ServerProcess) -> None:
    """Class names ride in `parameters` (REST) and in the proto's added parameters field."""
    rest = httpx.get(f"{server.url}/v2/models/m").json()
    label = next(o for o in rest["outputs"] if o["name"] == "label")
    assert label == {"name": "label", "datatype": "BYTES", "shape": [-1], "parameters": {"classes": CLASSES}}
    assert rest["parameters"]["classes"] == CLASSES
    with grpc.insecure_channel(server.grpc) as channel:  # type: ignore[attr-defined]
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")(
            service_pb2.ModelMetadataRequest(name="m").SerializeToString(), timeout=10
        )
    # Field 5 (outputs) of the published message still parses; the names are in field 4 of
    # the label's TensorMetadata, as a JSON list.
    parsed = service_pb2.ModelMetadataResponse.FromString(raw)
    assert [o.name for o in parsed.outputs] == ["probabilities", "label"]
    assert json.dumps(CLASSES, separators=(",", ":")).encode() in raw


# -- inference --------------------------------------------------------------------


def test_infer_raw_matches_the_model_and_rest(
    client: grpcclient.InferenceServerClient, server: ServerProcess, model: Predictor
) -> None:
    rows = _rows(5)
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # raw_input_contents
    result = client.infer("m", [tensor], request_id="g-1", headers={"x-routing-key": "k"})
    scores, names = _expected(model, rows)
    np.testing.assert_allclose(result.as_numpy("probabilities"), scores, rtol=1e-5, atol=1e-6)
    assert [v.decode() for v in result.as_numpy("label")] == names
    response = result.get_response()
    assert response.id == "g-1" and response.model_version == "2"
    rest = httpx.post(f"{server.url}/v2/models/m/infer", json={
        "inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]
    }).json()
    assert rest["outputs"][1]["data"] == names


def test_infer_typed_contents(stub: tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable], model: Predictor) -> None:
    """Typed contents in, typed contents out; FP64 is cast; only the requested output returns."""
    _, call = stub
    rows = _rows(3, seed=4)
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="input", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.astype(np.float64).ravel().tolist())
    request.outputs.add(name="label")
    raw, state = call.with_call(request.SerializeToString(), timeout=10)
    response = service_pb2.ModelInferResponse.FromString(raw)
    trailing = dict(state.trailing_metadata())
    assert trailing["x-model-version"] == "2" and len(trailing["x-feedback-id"]) >= 16
    assert not response.raw_output_contents
    assert [o.name for o in response.outputs] == ["label"]
    assert [b.decode() for b in response.outputs[0].contents.bytes_contents] == _expected(model, rows)[1]


def test_canary_routing_by_key(store: str, tmp_path: Path) -> None:
    """The REST routing applies to gRPC calls: x-routing-key metadata keeps a client on one side."""
    grpc_port = free_port()
    args = ["--store", store, "--model", "m", "--version", "2", "--candidate", "1", "--canary-weight", "50",
            "--grpc-port", str(grpc_port)]
    with ServerProcess(args, tmp_path / "canary.log"), grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as c:
        tensor = grpcclient.InferInput("input", [1, N_FEATURES], "FP32")
        tensor.set_data_from_numpy(_rows(1))
        answered: dict[str, set[str]] = {}
        for key in (f"user-{i}" for i in range(24)):
            for _ in range(2):
                response = c.infer("m", [tensor], headers={"x-routing-key": key}).get_response()
                answered.setdefault(key, set()).add(response.model_version)
        assert all(len(versions) == 1 for versions in answered.values()), answered
        assert set().union(*answered.values()) == {"1", "2"}


def test_async_client_and_metrics(server: ServerProcess) -> None:
    """Concurrent calls from tritonclient's asyncio client batch together and count in /metrics."""
    def count() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return sum(v for k, v in metric_values(text, "modelops_requests_total").items() if 'code="200"' in k)

    before = count()

    async def run() -> list[str]:
        async with aioclient.InferenceServerClient(server.grpc) as c:  # type: ignore[attr-defined]
            async def one(i: int) -> str:
                tensor = aioclient.InferInput("input", [1, N_FEATURES], "FP32")
                tensor.set_data_from_numpy(_rows(1, seed=i))
                result = await c.infer("m", [tensor])
                return str(result.as_numpy("label")[0].decode())

            return await asyncio.gather(*(one(i) for i in range(64)))

    labels = asyncio.run(run())
    assert len(labels) == 64 and set(labels) <= set(CLASSES)
    assert count() - before == 64


def test_tritonclient_http_binary_tensors(server: ServerProcess, model: Predictor) -> None:
    """tritonclient's HTTP client sends and asks for binary tensors (Inference-Header-Content-Length)."""
    c = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    rows = _rows(4, seed=9)
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True),
               httpclient.InferRequestedOutput("label", binary_data=True)]
    result = c.infer("m", [tensor], outputs=outputs)
    scores, names = _expected(model, rows)
    np.testing.assert_allclose(result.as_numpy("probabilities"), scores, rtol=1e-5, atol=1e-6)
    assert [v.decode() for v in result.as_numpy("label")] == names
    # JSON outputs with a binary input, and the other way round.
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = c.infer("m", [tensor], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    np.testing.assert_allclose(result.as_numpy("probabilities"), scores, rtol=1e-5, atol=1e-6)
    assert c.is_server_ready() and c.get_model_metadata("m")["outputs"][1]["datatype"] == "BYTES"
    c.close()


def test_binary_rest_errors(server: ServerProcess) -> None:
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, N_FEATURES],
                                     "parameters": {"binary_data_size": 4 * N_FEATURES}}]}).encode()
    url = f"{server.url}/v2/models/m/infer"
    cases = [
        (header + b"\0" * (4 * N_FEATURES - 1), str(len(header))),  # short tensor
        (header + b"\0" * (4 * N_FEATURES + 3), str(len(header))),  # trailing bytes
        (header + b"\0" * (4 * N_FEATURES), "x"),  # not a length
        (header + b"\0" * (4 * N_FEATURES), str(len(header) * 10)),  # past the body
        (header[:-2] + b"\0" * (4 * N_FEATURES), str(len(header) - 2)),  # cut JSON
    ]
    for body, length in cases:
        reply = httpx.post(url, content=body, headers={"inference-header-content-length": length})
        assert reply.status_code == 400, (length, reply.text)
    ok = httpx.post(url, content=header + np.ones(N_FEATURES, "<f4").tobytes(),
                    headers={"inference-header-content-length": str(len(header))})
    assert ok.status_code == 200 and len(ok.json()["outputs"]) == 2


def test_kserve_sdk_clients(server: ServerProcess, tmp_path: Path) -> None:
    if importlib.util.find_spec("kserve") is None:  # not imported here: see the module docstring
        pytest.fail("the kserve SDK is not installed (.ci/setup.d/kserve.sh installs it)")
    script = textwrap.dedent(f"""
        import asyncio, json
        import numpy as np
        from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
        from kserve.inference_client import RESTConfig

        rows = np.random.default_rng(3).random((2, {N_FEATURES}), dtype=np.float32)

        async def main():
            out = {{}}
            g = InferenceGRPCClient("{server.grpc}")  # type: ignore[attr-defined]
            out["grpc_ready"] = await g.is_server_ready()
            out["grpc_model_ready"] = await g.is_model_ready("m")
            tensor = InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=False)
            result = await g.infer(InferRequest("m", [tensor], request_id="k-1"))
            out["grpc"] = {{o.name: o.as_numpy().tolist() for o in result.outputs}}
            out["grpc_id"] = result.id
            await g.close()
            r = InferenceRESTClient(RESTConfig(protocol="v2"))
            out["rest_ready"] = await r.is_server_ready("{server.url}")
            tensor = InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=False)
            result = await r.infer("{server.url}", InferRequest("m", [tensor]), model_name="m")
            out["rest"] = {{o.name: o.as_numpy().tolist() for o in result.outputs}}
            out["rest_model_ready"] = await r.is_model_ready("{server.url}", "m")
            out["datatypes"] = [o.datatype for o in result.outputs]
            await r.close()
            print(json.dumps(out, default=lambda v: v.decode() if isinstance(v, bytes) else str(v)))

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["grpc_ready"] and out["grpc_model_ready"] and out["rest_ready"]
    assert out["grpc_id"] == "k-1"
    assert out["grpc"]["label"] == out["rest"]["label"]
    assert all(name in CLASSES for name in out["grpc"]["label"])
    np.testing.assert_allclose(out["grpc"]["probabilities"], out["rest"]["probabilities"], rtol=1e-6)
    assert out["rest_model_ready"] and out["datatypes"] == ["FP32", "BYTES"]


# -- bad input --------------------------------------------------------------------


def _code(call: grpc.UnaryUnaryMultiCallable, message: bytes) -> grpc.StatusCode:
    try:
        call(message, timeout=20)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _request(shape: list[int], datatype: str = "FP32", name: str = "input", raw: bytes | None = None) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw if raw is not None else np.zeros(shape, "<f4").tobytes())
    return request.SerializeToString()


def test_bad_requests(stub: tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable]) -> None:
    _, call = stub
    bad = {
        "wrong shape": _request([2, N_FEATURES + 1]),
        "wrong rank": _request([N_FEATURES]),
        "zero rows": _request([0, N_FEATURES]),
        "BYTES input": _request([1, N_FEATURES], "BYTES", raw=b"\0" * 4 * N_FEATURES),
        "unknown datatype": _request([1, N_FEATURES], "FP8"),
        "unknown input": _request([1, N_FEATURES], name="x"),
        "short raw": _request([2, N_FEATURES], raw=b"\0" * 7),
        "no inputs": service_pb2.ModelInferRequest(model_name="m").SerializeToString(),
        "not protobuf": b"\xff\xff\xff\xff",
        "NaN": _request([1, N_FEATURES], raw=np.full(N_FEATURES, np.nan, "<f4").tobytes()),
    }
    for what, message in bad.items():
        assert _code(call, message) == grpc.StatusCode.INVALID_ARGUMENT, what
    assert _code(call, _request([1, N_FEATURES])) == grpc.StatusCode.OK
    # Over the body limit: refused by gRPC before any parsing.
    rows = (MAX_BODY // (4 * N_FEATURES)) + 8
    assert _code(call, _request([rows, N_FEATURES])) == grpc.StatusCode.RESOURCE_EXHAUSTED
    unknown = service_pb2.ModelInferRequest(model_name="other")
    assert _code(call, unknown.SerializeToString()) == grpc.StatusCode.NOT_FOUND


def _random_message(rng: np.random.Generator) -> bytes:
    """A random ModelInferRequest: right and wrong names, datatypes, shapes and contents."""
    kind = rng.integers(0, 10)
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 200)))  # not a message at all
    request = service_pb2.ModelInferRequest(model_name="m", id=str(rng.integers(0, 1 << 30)))
    datatypes = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "UINT64", "BOOL", "BYTES", "", "X"]
    for _ in range(int(rng.choice([0, 1, 1, 1, 1, 2]))):
        shape = [int(rng.choice([-1, 0, 1, 2, 3, N_FEATURES, 1 << 40])) for _ in range(int(rng.integers(0, 4)))]
        if rng.random() < 0.5:
            shape = [int(rng.integers(1, 4)), N_FEATURES]
        datatype = str(rng.choice(datatypes)) if rng.random() < 0.5 else "FP32"
        tensor = request.inputs.add(name="input" if rng.random() < 0.9 else "x", datatype=datatype, shape=shape)
        n = int(np.prod(shape)) if all(0 <= d < 1 << 20 for d in shape) else 3
        n = min(n, 4096) + int(rng.choice([0, 0, 0, -1, 1]))
        values = rng.normal(0, float(rng.choice([1, 1e30, 1e300])), max(n, 0))
        form = rng.integers(0, 4)
        if form == 0:
            request.raw_input_contents.append(values.astype("<f4").tobytes()[: int(rng.integers(0, 4 * max(n, 1) + 2))])
        elif form == 1:
            request.raw_input_contents.append(values.astype("<f4").tobytes())
        elif form == 2:
            tensor.contents.fp32_contents.extend(values.astype(np.float32).tolist())
        else:
            tensor.contents.int64_contents.extend(values.astype(np.int64).tolist())
            tensor.contents.bytes_contents.extend([b"a", b"\xff"])
    if rng.random() < 0.2:
        request.outputs.add(name=str(rng.choice(["label", "probabilities", "nope"])))
    if rng.random() < 0.1:
        request.raw_input_contents.append(b"extra")
    message = request.SerializeToString()
    if rng.random() < 0.15 and message:  # flip bytes: broken lengths, tags, UTF-8
        data = bytearray(message)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        message = bytes(data)
    return message


def test_fuzz_never_internal(stub: tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable], server: ServerProcess) -> None:
    """2000+ random messages: each answered OK or a client error code, never INTERNAL/UNKNOWN."""
    _, call = stub
    rng = np.random.default_rng(17)
    seen: dict[str, int] = {}
    with np.errstate(all="ignore"):  # huge values overflow on purpose
        messages = [_random_message(rng) for _ in range(2200)]
    for message in messages:
        code = _code(call, message)
        seen[code.name] = seen.get(code.name, 0) + 1
        assert code in OK_OR_CLIENT, (code, message[:200])
    assert seen.get("INVALID_ARGUMENT", 0) > 500 and seen.get("OK", 0) > 50, seen
    assert seen.get("NOT_FOUND", 0) < 50, seen
    assert ServerProcess.ready(server)  # still answering


# -- the .proto against the clients' copies --------------------------------------------

_DUMP = """
import json, sys, importlib
module = importlib.import_module(sys.argv[1])
pb2 = getattr(module, "pb2", module)
def fields(message):
    out = {f.name: [f.number, f.type, f.label if hasattr(f, "label") else 0] for f in message.fields}
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            out.update({f"{nested.name}.{k}": v for k, v in fields(nested).items()})
    return out
print(json.dumps({name: fields(m) for name, m in pb2.DESCRIPTOR.message_types_by_name.items()}))
"""


def _messages(module: str) -> dict[str, dict[str, list[int]]]:
    done = subprocess.run([sys.executable, "-c", _DUMP, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("client_module", ["tritonclient.grpc.service_pb2",
                                           "kserve.protocol.grpc.grpc_predict_v2_pb2"])
def test_proto_matches_the_clients(client_module: str) -> None:
    """Every message and field of ours that a client also declares has its number and type."""
    if importlib.util.find_spec(client_module.split(".")[0]) is None:
        pytest.skip(f"{client_module} is not installed")
    ours = _messages("modelops_runtime.serve.oip")
    theirs = _messages(client_module)
    if client_module.startswith("kserve"):
        # The KServe SDK declares its own load/unload messages (model_name = 1) under
        # Triton's names; the server follows Triton's, which tritonclient sends.
        theirs = {k: v for k, v in theirs.items() if not k.startswith("RepositoryModel")}
    shared = set(ours) & set(theirs)
    assert {"ModelInferRequest", "ModelInferResponse", "ModelMetadataResponse", "InferTensorContents"} <= shared
    for name in shared:
        for field, spec in ours[name].items():
            if field in theirs[name]:
                assert theirs[name][field] == spec, (name, field)
        # Nothing a client sends may be unknown to the server.
        assert set(theirs[name]) <= set(ours[name]), name
