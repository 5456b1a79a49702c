"""Feedback behind a Service: it lands on any replica and still reaches the one that answered.

Real server processes on loopback, peers of each other; a capture server that is not
a peer records whether a forged id could make a server call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelops_runtime.serve import peers
from tests.runtime.serve_helpers import (
    N_FEATURES,
    CaptureServer,
    ServerProcess,
    infer_body,
    make_store,
    metric_values,
)

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("store"))


def _replicas(store: str, logs: Path, count: int, extra: list[str]) -> list[ServerProcess]:
    """Servers whose addresses are known before they start (each names itself)."""
    made = [ServerProcess([], logs / f"replica-{i}.log") for i in range(count)]
    for server in made:
        server.args += ["--store", store, "--model", "m", "--version", "1",
                        "--advertise-address", f"127.0.0.1:{server.port}", *extra]  # fmt: skip
    return made


@pytest.fixture(scope="module")
def pair(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    logs = tmp_path_factory.mktemp("pair")
    first, second = _replicas(store, logs, 2, [])
    listed = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
    for server in (first, second):
        server.args += ["--peers", listed]
    with first, second:
        yield [first, second]


def _answer(server: ServerProcess, rows: np.ndarray) -> tuple[list[int], str]:
    reply = httpx.post(f"{server.url}/v2/models/m/infer", json=infer_body(rows), timeout=30)
    assert reply.status_code == 200, reply.text
    predictions = next(o for o in reply.json()["outputs"] if o["name"] == "predictions")
    return [int(v) for v in predictions["data"]], reply.headers["x-feedback-id"]


def _feedback_rows(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(metric_values(text, "modelops_feedback_rows_total").values())


def test_feedback_on_another_replica_reaches_the_one_that_answered(
    pair: list[ServerProcess],
) -> None:
    first, second = pair
    rows = np.random.default_rng(3).normal(size=(4, N_FEATURES)).astype(np.float32)
    predicted, issued = _answer(first, rows)
    assert peers.address_of(issued) == f"127.0.0.1:{first.port}"
    before = _feedback_rows(first)
    reply = httpx.post(
        f"{second.url}/v2/models/m/feedback", json={"id": issued, "labels": predicted}, timeout=30
    )
    assert reply.json() == {"accepted": 1, "unknown": []}, reply.text
    assert _feedback_rows(first) == before + len(predicted)  # scored where it was answered
    assert _feedback_rows(second) == 0
    # Once, wherever the replay lands.
    for server in (second, first):
        again = httpx.post(
            f"{server.url}/v2/models/m/feedback",
            json={"id": issued, "labels": predicted},
            timeout=30,
        )
        assert again.status_code == 404, again.text


def test_a_mixed_list_is_split_and_a_forged_address_is_never_called(
    pair: list[ServerProcess],
) -> None:
    first, second = pair
    rows = np.zeros((2, N_FEATURES), dtype=np.float32)
    on_first, first_id = _answer(first, rows)
    on_second, second_id = _answer(second, rows)
    capture = CaptureServer(b'{"accepted": 99, "unknown": []}')
    try:
        forged = peers.tag(f"127.0.0.1:{capture.port}") + ".made-up"
        reply = httpx.post(
            f"{second.url}/v2/models/m/feedback",
            json=[
                {"id": first_id, "labels": on_first},
                {"id": second_id, "labels": on_second},
                {"id": forged, "labels": [0, 0]},
            ],
            timeout=30,
        )
    finally:
        capture.close()
    assert reply.json() == {"accepted": 2, "unknown": [forged]}, reply.text
    assert capture.requests == []  # not a peer: no request left the server for it


def test_a_forwarded_request_is_never_forwarded_again(pair: list[ServerProcess]) -> None:
    first, second = pair
    rows = np.zeros((1, N_FEATURES), dtype=np.float32)
    predicted, issued = _answer(first, rows)
    reply = httpx.post(
        f"{second.url}/v2/models/m/feedback",
        json=[{"id": issued, "labels": predicted}],
        headers={peers.FORWARDED: "1"},
        timeout=30,
    )
    assert reply.json() == {"accepted": 0, "unknown": [issued]}
    # Still unused on the replica that issued it.
    direct = httpx.post(
        f"{first.url}/v2/models/m/feedback", json={"id": issued, "labels": predicted}, timeout=30
    )
    assert direct.json() == {"accepted": 1, "unknown": []}


def test_peers_by_dns_name_on_one_host(store: str, tmp_path: Path) -> None:
    """`--peers-dns` (a headless Service's name in a cluster; here localhost)."""
    strict_first, strict_second = _replicas(store, tmp_path, 2, ["--peers-dns", "localhost"])
    loose_first, loose_second = _replicas(
        store, tmp_path, 2, ["--peers-dns", "localhost", "--peers-any-port"]
    )
    rows = np.zeros((1, N_FEATURES), dtype=np.float32)
    with loose_first, loose_second:
        predicted, issued = _answer(loose_first, rows)
        reply = httpx.post(
            f"{loose_second.url}/v2/models/m/feedback",
            json=[{"id": issued, "labels": predicted}],
            timeout=30,
        )
        assert reply.json() == {"accepted": 1, "unknown": []}, reply.text
    with strict_first, strict_second:
        # Peers by name listen on this server's own port: another port is not a peer.
        predicted, issued = _answer(strict_first, rows)
        reply = httpx.post(
            f"{strict_second.url}/v2/models/m/feedback",
            json=[{"id": issued, "labels": predicted}],
            timeout=30,
        )
        assert reply.json() == {"accepted": 0, "unknown": [issued]}, reply.text


def test_peers_need_an_advertised_address(store: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "modelops_runtime", "serve", "--store", store, "--model", "m",
         "--peers", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "--advertise-address" in done.stderr, done.stderr


def test_a_feedback_id_tag_round_trips_and_garbage_has_no_address() -> None:
    assert peers.address_of(peers.tag("10.0.0.7:8080") + ".tok") == "10.0.0.7:8080"
    assert peers.address_of("plain-token") is None
    assert peers.address_of("%%%.tok") is None
