"""Triton's bidirectional ModelStreamInfer, driven by tritonclient's stream API and by raw bytes.

The server is a real `serve` process with both ports (serve_helpers.make_store: version 1
serves). Answers on a stream come in the order they finish; the request id pairs them.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from tests.runtime.serve_helpers import N_FEATURES, GrpcServerProcess, make_store, serve_m

pytestmark = pytest.mark.runtime

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServerProcess]:
    with serve_m(store, tmp_path_factory.mktemp("logs") / "server.log") as process:
        yield process


def _input(rows: np.ndarray) -> Any:
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_stream_answers_every_request(server: GrpcServerProcess, store: str) -> None:
    """100 requests on one stream: each answer matches the model, paired by id; feedback works."""
    model = load_predictor(artifacts.version_uri(store, "m", 1))
    rows = {str(i): np.random.default_rng(i).random((1 + i % 3, N_FEATURES), dtype=np.float32)
            for i in range(100)}
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for request_id, batch in rows.items():
            client.async_stream_infer("m", [_input(batch)], request_id=request_id)
        client.stop_stream()  # waits for every answer
    seen = set()
    while not answers.empty():
        result, error = answers.get()
        assert error is None, error
        response = result.get_response()
        expected = model.scores(rows[response.id])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
        assert response.model_version == "1"
        seen.add(response.id)
    assert seen == set(rows)
    feedback_id = response.parameters["feedback_id"].string_param
    labels = [0] * len(rows[response.id])
    reply = httpx.post(f"{server.url}/v2/models/m/feedback", json={"id": feedback_id, "labels": labels})
    assert reply.status_code == 200, reply.text


def test_a_bad_request_fails_alone(server: GrpcServerProcess) -> None:
    """An error answer (with the request's id) for the bad request; the stream goes on."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("m", [_input(np.zeros((1, N_FEATURES + 1), np.float32))], request_id="bad")
        client.async_stream_infer("nope", [_input(np.zeros((1, N_FEATURES), np.float32))], request_id="other")
        client.async_stream_infer("m", [_input(np.zeros((2, N_FEATURES), np.float32))], request_id="good")
        client.stop_stream()
    outcomes = [answers.get_nowait() for _ in range(3)]
    errors = [str(error) for result, error in outcomes if error is not None]
    assert len(errors) == 2 and any("shape" in e for e in errors) and any("nope" in e for e in errors), errors
    good = [result for result, error in outcomes if error is None]
    assert [r.get_response().id for r in good] == ["good"]
    assert good[0].as_numpy("probabilities").shape == (2, 10)


def test_raw_stream_never_internal(server: GrpcServerProcess) -> None:
    """Garbage and wrong messages on one raw stream: an answer each, error_message or result."""
    rng = np.random.default_rng(3)
    messages = []
    for i in range(300):
        request = service_pb2.ModelInferRequest(model_name="m", id=str(i))
        shape = [int(rng.integers(0, 3)), int(rng.choice([N_FEATURES, 3]))]
        request.inputs.add(name=str(rng.choice(["input", "x"])), datatype=str(rng.choice(["FP32", "FP16", "X"])),
                           shape=shape)
        request.raw_input_contents.append(rng.random(shape, dtype=np.float32).tobytes())
        message = request.SerializeToString()
        messages.append(rng.bytes(int(rng.integers(1, 40))) if i % 7 == 0 else message)
    with grpc.insecure_channel(server.grpc) as channel:
        call = channel.stream_stream(STREAM)
        answers = [service_pb2.ModelStreamInferResponse.FromString(raw) for raw in call(iter(messages), timeout=60)]
    assert len(answers) == len(messages)
    failed = [a for a in answers if a.error_message]
    assert "internal server error" not in {a.error_message for a in failed}
    assert 0 < len(failed) < len(messages)
    assert all(a.infer_response.outputs for a in answers if not a.error_message)
    assert server.ready()
