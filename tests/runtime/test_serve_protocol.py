"""The Open Inference Protocol over real HTTP: metadata, inference, batching, feedback,
and a fuzz run of malformed bodies, all against one real server process."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops_runtime import artifacts
from modelops_runtime.predictor import Predictor, load_predictor
from tests.runtime.serve_helpers import (
    CLASSES,
    N_FEATURES,
    ServerProcess,
    infer_body,
    make_store,
    metric_values,
    post_all,
)

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    args = ["--store", store, "--model", "m", "--version", "1",
            "--max-batch-size", "32", "--max-wait-ms", "20", "--max-body-bytes", str(256 * 1024),
            "--header-timeout-s", "1"]
    with ServerProcess(args, log) as process:
        yield process


@pytest.fixture(scope="module")
def v1(store: str) -> Predictor:
    return load_predictor(artifacts.version_uri(store, "m", 1))


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


def test_health_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/m/ready").json() == {"name": "m", "ready": True}
    assert client.get("/v2/models/m/versions/1/ready").status_code == 200
    assert client.get("/v2/models/m/versions/9/ready").status_code == 503
    meta = client.get("/v2/models/m").json()
    assert meta["name"] == "m" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert meta["outputs"] == [
        {"name": "predictions", "datatype": "INT64", "shape": [-1], "parameters": {"classes": CLASSES}},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]},
    ]
    assert client.get("/v2/models/m/versions/1").json()["inputs"] == meta["inputs"]


def test_infer_matches_the_model(client: httpx.Client, v1: Predictor) -> None:
    rows = np.random.default_rng(1).random((3, N_FEATURES), dtype=np.float32)
    reply = client.post("/v2/models/m/infer", json=infer_body(rows, "req-a"))
    assert reply.status_code == 200
    assert reply.headers["x-model-version"] == "1"
    body = reply.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("req-a", "m", "1")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predictions"]["shape"] == [3]
    assert outputs["predictions"]["data"] == v1.predict(rows).tolist()
    assert outputs["probabilities"]["shape"] == [3, len(CLASSES)]
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (3, -1)), v1.scores(rows), rtol=1e-5, atol=1e-6
    )
    only = client.post("/v2/models/m/infer", json={**infer_body(rows), "outputs": [{"name": "predictions"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["predictions"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{}", 400, "missing the field 'inputs'"),
        (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}', 400, "'data'"),
        (b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": []}]}', 400, "unknown input 'x'"),
        (b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}', 400, "shape [1, 3]"),
        (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1]}]}', 400, "has 1 values"),
        (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "BYTES", "data": ["a"]}]}', 400, "BYTES"),
        (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP99", "data": [1]}]}', 400, "unknown datatype"),
        (b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]}', 400, "shape"),
    ],
)
def test_bad_input_is_a_named_4xx(client: httpx.Client, body: bytes, status: int, words: str) -> None:
    reply = client.post("/v2/models/m/infer", content=body)
    assert reply.status_code == status
    assert words in reply.json()["error"]


def test_wrong_datatype_in_data_and_paths(client: httpx.Client) -> None:
    strings = {"inputs": [{"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32", "data": ["1"] * N_FEATURES}]}
    reply = client.post("/v2/models/m/infer", json=strings)
    assert reply.status_code == 400 and "only numbers" in reply.json()["error"]
    assert client.post("/v2/models/nope/infer", json=strings).status_code == 404
    assert client.post("/v2/models/m/versions/7/infer", json=strings).status_code == 404
    assert client.get("/v2/models/m/infer").status_code == 405
    assert client.get("/no/such/path").status_code == 404
    big = client.post("/v2/models/m/infer", content=b"[" + b"1," * 200_000 + b"1]")
    assert big.status_code == 413 and "limit" in big.json()["error"]


def test_drip_fed_headers_get_a_408_and_the_connection_closes(server: ServerProcess) -> None:
    """Finding 9: one byte at a time keeps a connection busy, never idle; a deadline ends it."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - started < 15:
            try:
                sock.sendall(b"X")  # never a full header line
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request headers not complete within 1 s" in answer
    assert time.monotonic() - started < 10


def test_one_request_cannot_exceed_the_batch_size(client: httpx.Client) -> None:
    """Finding 9: a single request of 33 rows is not run as one oversize batch of 33."""
    rows = np.zeros((33, N_FEATURES), dtype=np.float32)
    reply = client.post("/v2/models/m/infer", json=infer_body(rows))
    assert reply.status_code == 413
    assert reply.json()["error"] == "the request has 33 rows; at most 32 (maxBatchSize) per request"
    assert client.post("/v2/models/m/infer", json=infer_body(rows[:32])).status_code == 200


# Far over the limit, and far over what the kernel buffers: a server that closes without
# reading the rest resets the connection while the client is still sending.
HUGE_BODY = b"0" * (40 * 1024 * 1024)
TOO_LARGE = {"error": f"request body exceeds the limit of {256 * 1024} bytes"}


def test_a_huge_body_gets_the_413_over_urllib(server: ServerProcess) -> None:
    request = urllib.request.Request(
        f"{server.url}/v2/models/m/infer", data=HUGE_BODY, method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 413
    assert json.loads(raised.value.read()) == TOO_LARGE


def test_a_huge_body_gets_the_413_over_aiohttp(server: ServerProcess) -> None:
    async def post() -> tuple[int, Any]:
        url = f"{server.url}/v2/models/m/infer"
        async with aiohttp.ClientSession() as session, session.post(url, data=HUGE_BODY) as reply:
            return reply.status, await reply.json(content_type=None)

    assert asyncio.run(post()) == (413, TOO_LARGE)


def test_huge_headers_followed_by_a_body_get_the_431(server: ServerProcess) -> None:
    head = (b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: %d\r\nX-Big: " % len(HUGE_BODY)
            + b"a" * 70_000 + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + HUGE_BODY)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"connection: close" in rest
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": f"request headers exceed the limit of {64 * 1024} bytes"
    }


def test_malformed_http_is_400(server: ServerProcess) -> None:
    for raw, status in [
        (b"BLAH\r\n\r\n", b"400"),
        (b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(4096).split(b" ")[1] == status


def test_batching_groups_concurrent_requests(server: ServerProcess, v1: Predictor) -> None:
    def batch_totals() -> tuple[float, float]:
        text = httpx.get(f"{server.url}/metrics").text
        key = '{model="m",version="1"}'
        return (metric_values(text, "modelops_batch_size_sum").get(key, 0.0),
                metric_values(text, "modelops_batch_size_count").get(key, 0.0))

    rows_before, batches_before = batch_totals()
    rng = np.random.default_rng(2)
    rows = [rng.random((1, N_FEATURES), dtype=np.float32) for _ in range(400)]
    replies = post_all(f"{server.url}/v2/models/m/infer", [infer_body(r) for r in rows], concurrency=32)
    assert [r.status for r in replies] == [200] * 400
    # every request got the answer for its own rows, not a neighbour's in the batch
    expected = v1.scores(np.concatenate(rows))
    got = np.array([r.body["outputs"][1]["data"] for r in replies], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    rows_after, batches_after = batch_totals()
    batches = batches_after - batches_before
    mean_batch = (rows_after - rows_before) / batches
    assert mean_batch > 2.0, f"mean batch {mean_batch:.2f} over {batches} batches"


def test_feedback_gives_rolling_accuracy(client: httpx.Client, v1: Predictor) -> None:
    rng = np.random.default_rng(3)
    rows = rng.random((100, N_FEATURES), dtype=np.float32)
    predicted = v1.predict(rows)
    ids = []
    for i in range(100):
        reply = client.post("/v2/models/m/infer", json=infer_body(rows[i : i + 1], f"fb-{i}"))
        assert reply.status_code == 200 and reply.json()["id"] == f"fb-{i}"  # the client's id, echoed
        ids.append(reply.headers["x-feedback-id"])
    # 70 right (given as class names), 30 wrong (given as indices)
    items = [{"id": ids[i], "labels": [CLASSES[int(predicted[i])]]} for i in range(70)]
    items += [{"id": ids[i], "labels": [int(predicted[i] + 1) % len(CLASSES)]} for i in range(70, 100)]
    assert client.post("/v2/models/m/feedback", json=items).json() == {"accepted": 100, "unknown": []}
    text = client.get("/metrics").text
    accuracy = metric_values(text, "modelops_rolling_accuracy")['{model="m",version="1"}']
    assert accuracy == pytest.approx(0.7)
    assert client.post("/v2/models/m/feedback", json={"id": "never-seen", "labels": [1]}).status_code == 404
    mixed = client.post("/v2/models/m/feedback", json=[{"id": "never-seen", "labels": [1]}]).json()
    assert mixed == {"accepted": 0, "unknown": ["never-seen"]}
    fresh = client.post("/v2/models/m/infer", json=infer_body(rows[:1])).headers["x-feedback-id"]
    wrong_length = client.post("/v2/models/m/feedback", json={"id": fresh, "labels": [1, 2]})
    assert wrong_length.status_code == 400 and "1 rows" in wrong_length.json()["error"]
    assert client.post("/v2/models/m/feedback", json={"id": fresh, "labels": ["zz"]}).status_code == 400
    # the served class distribution is counted per class
    assert sum(metric_values(text, "modelops_predictions_total").values()) >= 100


# -- fuzzing -------------------------------------------------------------------

def _encode(value: Any) -> bytes:
    """Stdlib JSON: unlike orjson it writes integers beyond 64 bits, a case worth sending."""
    return json.dumps(value).encode()


_VALID = {"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32", "data": [0.5] * N_FEATURES}
_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
# Cheap to draw (generation, not HTTP, is what costs time here): near-valid data arrays
# of the wrong length, depth or element type, next to arbitrary JSON.
_field_values = st.one_of(
    _json,
    st.lists(st.integers(min_value=-3, max_value=200), max_size=4),
    st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "FP16", "", "fp32"]),
    st.integers(min_value=0, max_value=130).map(lambda n: [0.25] * n),
    st.tuples(st.integers(0, 3), st.integers(0, 70)).map(lambda t: [[0.5] * t[1]] * t[0]),
    st.lists(_scalar | st.floats(min_value=-1e40, max_value=1e40), min_size=1, max_size=4).map(
        lambda tail: [0.5] * (N_FEATURES - len(tail)) + tail
    ),
)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid body with one field dropped, replaced or added, or extra tensors."""
    tensor = dict(_VALID)
    key = draw(st.sampled_from(["name", "shape", "datatype", "data", "extra"]))
    if draw(st.booleans()) and key != "extra":
        tensor.pop(key)
    else:
        tensor[key] = draw(_field_values)
    body: dict[str, Any] = {"inputs": draw(st.sampled_from([[tensor], [tensor, tensor], tensor]))}
    if draw(st.booleans()):
        body[draw(st.sampled_from(["id", "outputs", "parameters"]))] = draw(_json)
    return _encode(body)


_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(_encode),
    _mutated(),
    _mutated().map(lambda b: b[: len(b) // 2]),
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_fuzz_malformed_bodies_never_5xx(server: ServerProcess) -> None:
    """10 000 random and mutated bodies: never a 5xx, and the server's memory stays put."""
    assert server.process is not None
    statuses: list[int] = []
    paths = ["/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/m/feedback"]
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        for _ in range(200):  # warm: allocator pools and caches reach their working size
            client.post(paths[0], content=b"{}")
        before = _rss_kib(server.process.pid)

        # Lists of bodies per example: hypothesis' per-example bookkeeping is amortised.
        @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(cases=st.lists(st.tuples(_bodies, st.sampled_from(paths)), min_size=20, max_size=20))
        def send(cases: list[tuple[bytes, str]]) -> None:
            for body, path in cases:
                reply = client.post(path, content=body)
                statuses.append(reply.status_code)
                assert reply.status_code < 500, (body[:200], reply.text)
                if reply.status_code >= 400:
                    assert reply.json()["error"]

        send()
        after = _rss_kib(server.process.pid)
    print(f"server RSS before {before} KiB, after {len(statuses)} bodies {after} KiB")
    assert len(statuses) >= 10_000
    assert sum(s >= 400 for s in statuses) > 7_500
    # Bounded: nothing of a refused body is kept (a leak of even 1 KiB a body would show).
    assert after - before < 32 * 1024, (before, after)
    assert server.ready()
    rows = np.zeros((1, N_FEATURES), dtype=np.float32)
    assert httpx.post(f"{server.url}/v2/models/m/infer", json=infer_body(rows)).status_code == 200


# Last in the module: its feedback would move the rolling accuracy measured above.
def test_feedback_names_an_id_the_server_issued_once(client: httpx.Client, v1: Predictor) -> None:
    """Finding 9: feedback for a client's own id, a guessed id or a replay is refused."""
    rows = np.zeros((1, N_FEATURES), dtype=np.float32)
    reply = client.post("/v2/models/m/infer", json=infer_body(rows, "mine-1"))
    issued = reply.headers["x-feedback-id"]
    assert len(issued) >= 20 and issued != "mine-1"
    label = [int(v1.predict(rows)[0])]
    guessed = issued[:-1] + ("B" if issued.endswith("A") else "A")  # one character off
    forged = [{"id": "mine-1", "labels": label}, {"id": guessed, "labels": label}]
    assert client.post("/v2/models/m/feedback", json=forged).json() == {
        "accepted": 0,
        "unknown": ["mine-1", guessed],
    }
    first = client.post("/v2/models/m/feedback", json=[{"id": issued, "labels": label}]).json()
    assert first == {"accepted": 1, "unknown": []}
    again = client.post("/v2/models/m/feedback", json={"id": issued, "labels": label})
    assert again.status_code == 404
