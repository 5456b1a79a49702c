"""Ensembles served in one process: composed from stored versions (weighted, vote)
and stored as an ensemble version (mean), compared with the members' own outputs."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from tests.runtime.serve_helpers import N_FEATURES, ServerProcess, infer_body, make_store

pytestmark = pytest.mark.runtime


def _outputs(reply: httpx.Response, rows: int) -> tuple[np.ndarray, np.ndarray]:
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o["data"] for o in reply.json()["outputs"]}
    return np.asarray(outputs["predictions"]), np.reshape(outputs["probabilities"], (rows, -1))


def test_ensembles_combine_their_members(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    members = [load_predictor(artifacts.version_uri(store, "m", v)) for v in (1, 2, 3)]
    rows = np.random.default_rng(0).random((16, N_FEATURES), dtype=np.float32)
    scores = [m.scores(rows) for m in members]
    args = ["--store", store, "--model", "m", "--members", "1:20,2:30,3:50", "--ensemble-method", "weighted"]
    with ServerProcess(args, tmp_path / "server.log") as server, httpx.Client(base_url=server.url) as client:
        # weighted, composed from versions 1-3 at start-up
        reply = client.post("/v2/models/m/infer", json=infer_body(rows))
        assert reply.headers["x-model-version"] == "1+2+3"
        predictions, probabilities = _outputs(reply, 16)
        weighted = 0.2 * scores[0] + 0.3 * scores[1] + 0.5 * scores[2]
        np.testing.assert_allclose(probabilities, weighted, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(predictions, weighted.argmax(axis=1))

        # mean: the stored ensemble version 4 (members 1 and 2), loaded beside it
        assert client.post("/v2/admin/load", json={"version": 4, "role": "candidate"}).status_code == 200
        _, probabilities = _outputs(client.post("/v2/models/m/versions/4/infer", json=infer_body(rows)), 16)
        np.testing.assert_allclose(probabilities, (scores[0] + scores[1]) / 2, rtol=1e-5, atol=1e-6)

        # vote: composed at runtime through the admin API
        load = {"members": "1,2,3", "method": "vote", "version": "vote3", "role": "candidate"}
        assert client.post("/v2/admin/load", json=load).status_code == 200
        predictions, probabilities = _outputs(
            client.post("/v2/models/m/versions/vote3/infer", json=infer_body(rows)), 16
        )
        votes = sum(np.eye(scores[0].shape[1])[s.argmax(axis=1)] for s in scores) / 3
        np.testing.assert_allclose(probabilities, votes, atol=1e-6)
        np.testing.assert_array_equal(predictions, votes.argmax(axis=1))
        assert not np.allclose(votes, weighted)  # the methods really differ on this data

        # members that cannot be combined are refused with a reason
        bad = client.post("/v2/admin/load", json={"members": "1,99", "method": "mean", "version": "x"})
        assert bad.status_code == 404 and "99" in bad.json()["error"]
