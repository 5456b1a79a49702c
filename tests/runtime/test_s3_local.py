"""`modelops run` (local mode) with its data and its model store on s3:// (the real SeaweedFS
server): it trains from the bucket, publishes the version there, serves it and answers a
prediction, given only the endpoint and credentials in its environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from tests.runtime.s3_helpers import fresh_prefix, keys, upload
from tests.runtime.serve_helpers import free_port, infer_body

pytestmark = pytest.mark.runtime


def manifests(root: str) -> list[dict[str, Any]]:
    meta = {"apiVersion": "modelops.dev/v1alpha1"}
    training = {
        **meta,
        "kind": "TrainingJob",
        "metadata": {"name": "digits-s3"},
        "spec": {
            "model": {"architecture": "mlp", "task": "classification", "hiddenLayers": [32]},
            "data": {
                "uri": f"{root}/data/train",
                "label": "target",
                "holdoutUri": f"{root}/data/holdout",
            },
            "training": {
                "epochs": 3,
                "batchSize": 64,
                "seed": 7,
                "loss": "crossEntropy",
                "optimizer": {"name": "adam", "learningRate": 0.003},
            },
            "resources": {"workers": 1},
            "output": {"modelName": "digits", "storeUri": f"{root}/models"},
        },
    }
    deployment = {
        **meta,
        "kind": "ModelDeployment",
        "metadata": {"name": "digits"},
        "spec": {
            "model": {"name": "digits", "version": "latest", "storeUri": f"{root}/models"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }
    return [training, deployment]


def infer(url: str, rows: np.ndarray, deadline: float) -> dict[str, Any]:
    """The first answer of the served model; the server may not be there yet."""
    request = json.dumps(infer_body(rows)).encode()
    while True:
        try:
            post = urllib.request.Request(
                url, data=request, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(post, timeout=10) as reply:
                answer: dict[str, Any] = json.loads(reply.read())
                return answer
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {url}: {error}") from error
            time.sleep(0.5)


def test_local_mode_trains_versions_and_serves_from_s3(
    s3: Any, digits_dir: Path, tmp_path: Path
) -> None:
    root = fresh_prefix("local")
    upload(s3, digits_dir, f"{root}/data")
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "digits.yaml").write_text(yaml.safe_dump_all(manifests(root)))
    port = free_port()
    env = {**os.environ, **s3.env()}  # what the README tells the user to export
    log = tmp_path / "run.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelops",
                "run",
                str(folder),
                "--state",
                str(tmp_path / "state"),
                "--root",
                str(tmp_path / "root"),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        rows = pd.read_parquet(digits_dir / "holdout")[[f"f{i}" for i in range(64)]].to_numpy(
            np.float32
        )[:4]
        answer = infer(f"http://127.0.0.1:{port}/v2/models/digits/infer", rows, started + 120)
        elapsed = time.monotonic() - started
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the run stops its children
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    output = log.read_text(errors="replace")
    assert code == 0, output[-3000:]
    # The version is on the server, whole, as a client independent of the runtime lists it.
    version = artifacts.version_uri(f"{root}/models", "digits", 1)
    assert {"model.json", "model.safetensors", "snapshot.json"} <= set(keys(s3, version)), output[
        -3000:
    ]
    predictor = load_predictor(version)
    assert predictor.card.classes is not None
    labels = {o["name"]: o["data"] for o in answer["outputs"]}["label"]
    assert [str(label) for label in labels] == [
        predictor.card.classes[i] for i in predictor.predict(rows)
    ]
    assert "AWS_SECRET_ACCESS_KEY" not in output and s3.env()["AWS_SECRET_ACCESS_KEY"] not in output
    print(f"modelops run on s3://: train, publish and first prediction in {elapsed:.1f}s")
