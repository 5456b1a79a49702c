"""Imported ONNX versions served by a real server process over HTTP: answers match
scikit-learn's, they ensemble like any version, and a broken or hostile file asked for
by the admin API is refused naming the file while the served version keeps answering."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelops_runtime import artifacts
from modelops_runtime.importer import Options, import_onnx
from tests.onnx_models import (
    DIGIT_FEATURES,
    custom_op_graph,
    digits,
    digits_pipeline,
    external_data_graph,
    onnx_bytes,
)
from tests.runtime.serve_helpers import ServerProcess, infer_body, save_classifier

pytestmark = pytest.mark.runtime

TOKEN = "onnx-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES = 64 * 1024
# Version 1 and 2: imported pipelines; 3 to 6: v1's card over a broken model.onnx;
# 7: a built-in MLP (safetensors) whose weights file is cut short.
BROKEN = {
    3: ("truncated", lambda good: good[: len(good) // 2], "malformed or truncated"),
    4: ("custom op", lambda _: custom_op_graph(), "custom domain 'evil.ops'"),
    5: ("external data", lambda _: external_data_graph(), "external file '../../../etc/passwd'"),
    6: ("oversize", lambda good: good + b"\x00" * MAX_BYTES, f"over the limit of {MAX_BYTES}"),
    7: ("safetensors", lambda good: good[:100], "Error while deserializing"),
}


def _break(store: str, version: int, good: bytes) -> None:
    folder = artifacts.version_uri(store, "digits", version)
    if version == 7:
        save_classifier(store, "digits", version)
        path = Path(folder[len("file://") :], artifacts.WEIGHTS)
        path.write_bytes(BROKEN[version][1](path.read_bytes()))
        return
    fs, path_in_store = artifacts.filesystem(folder)
    fs.makedirs(path_in_store, exist_ok=True)
    fs.pipe_file(f"{path_in_store}/{artifacts.ONNX}", BROKEN[version][1](good))
    card = artifacts.load_card(artifacts.version_uri(store, "digits", 1))
    artifacts.save_version(folder, card.model_copy(update={"version": version}), None, {}, None)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("onnx")
    store = f"file://{root / 'store'}"
    x = digits()[0]
    for c in (1.0, 0.01):
        path = root / f"digits-{c}.onnx"
        path.write_bytes(onnx_bytes(digits_pipeline(c), x))
        import_onnx(str(path), store, "digits", Options(features=DIGIT_FEATURES))
    folder = artifacts.version_uri(store, "digits", 1)
    good = Path(folder[len("file://") :], artifacts.ONNX).read_bytes()
    for version in BROKEN:
        _break(store, version, good)
    return store


@pytest.fixture(scope="module")
def server(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--store", store, "--model", "digits", "--version", "1", "--max-wait-ms", "2"]
    log = tmp_path_factory.mktemp("logs") / "server.log"
    env = {"MODELOPS_ADMIN_TOKEN": TOKEN, "MODELOPS_MAX_MODEL_BYTES": str(MAX_BYTES)}
    with ServerProcess(args, log, env=env) as process:
        yield process


def _infer(server: ServerProcess, rows: np.ndarray, version: str | None = None) -> dict[str, Any]:
    path = "/v2/models/digits" + (f"/versions/{version}" if version else "") + "/infer"
    reply = httpx.post(f"{server.url}{path}", json=infer_body(rows), timeout=30)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    return {
        "version": reply.headers["x-model-version"],
        "probabilities": np.asarray(outputs["probabilities"]["data"], np.float32).reshape(
            len(rows), -1
        ),
        "label": np.asarray(outputs["label"]["data"]),
    }


def test_an_imported_pipeline_answers_as_scikit_learn_does(server: ServerProcess) -> None:
    rows = digits()[0][1500:1532]  # rows the pipeline was not fitted on
    served = _infer(server, rows)
    assert served["version"] == "1"
    np.testing.assert_allclose(
        served["probabilities"], digits_pipeline().predict_proba(rows), atol=1e-5
    )
    assert served["label"].tolist() == digits_pipeline().predict(rows).tolist()
    metadata = httpx.get(f"{server.url}/v2/models/digits").json()
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]


def test_imported_versions_ensemble_like_any_version(server: ServerProcess) -> None:
    load = {"members": "1,2", "version": "both", "role": "candidate", "weight": 0}
    reply = httpx.post(f"{server.url}/v2/admin/load", json=load, headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text
    rows = digits()[0][1600:1632]
    served = _infer(server, rows, "both")
    expected = (
        digits_pipeline(1.0).predict_proba(rows) + digits_pipeline(0.01).predict_proba(rows)
    ) / 2
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)


@pytest.mark.parametrize("version", sorted(BROKEN), ids=[BROKEN[v][0] for v in sorted(BROKEN)])
def test_a_broken_version_is_refused_naming_its_file_and_v1_keeps_answering(
    server: ServerProcess, store: str, version: int
) -> None:
    rows = digits()[0][1700:1716]
    before = _infer(server, rows)
    reply = httpx.post(
        f"{server.url}/v2/admin/load", json={"version": version}, headers=AUTH, timeout=60
    )
    assert reply.status_code == 409, reply.text
    name = artifacts.WEIGHTS if version == 7 else artifacts.ONNX
    model_file = artifacts.join(artifacts.version_uri(store, "digits", version), name)
    message = reply.json()["error"]
    assert message.startswith(
        f"version {version} of model 'digits' cannot be loaded: {model_file}: "
    )
    assert BROKEN[version][2] in message
    state = httpx.get(f"{server.url}/v2/admin/routing", headers=AUTH).json()
    assert state["routing"]["stable"] == "1" and str(version) not in state["loaded"]
    after = _infer(server, rows)
    assert after["version"] == "1"
    np.testing.assert_array_equal(after["probabilities"], before["probabilities"])


def test_the_import_example_publishes_a_version_that_scores_as_scikit_learn_does(
    tmp_path: Path,
) -> None:
    from modelops_runtime.datasets import digits_frame
    from modelops_runtime.predictor import load_predictor

    script = Path(__file__).resolve().parents[2] / "examples" / "import" / "convert.py"
    done = subprocess.run(
        [sys.executable, str(script), "--root", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    printed = float(done.stdout.split("holdout accuracy: ")[1].split()[0])
    store = f"file://{tmp_path / 'models'}"
    assert artifacts.list_versions(store, "digits-sklearn") == [1]
    predictor = load_predictor(artifacts.version_uri(store, "digits-sklearn", 1))
    frame = digits_frame()
    assert predictor.card.features == [f"f{i}" for i in range(64)]
    held = np.random.default_rng(0).permutation(len(frame))[: len(frame) // 5]
    x = frame[predictor.card.features].to_numpy(np.float32)[held]
    accuracy = float((predictor.predict(x) == frame["target"].to_numpy()[held]).mean())
    assert accuracy == pytest.approx(printed, abs=1e-3) and accuracy > 0.9
