"""A custom network (examples/custom) end to end: its source pushed to the store, trained by
`python -m modelops_runtime train` on 2 Ray workers (as local mode and the head pod run it),
stored as ONNX, and served by a real server that has no copy of the code."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from modelops import cli
from modelops.api.artifact import WeightsFormat
from modelops.api.validation import parse_resource
from modelops_runtime import artifacts
from modelops_runtime.predictor import SingleModel, load_predictor, split_weights
from tests.runtime.serve_helpers import ServerProcess, infer_body
from tests.runtime.train_helpers import series_spec, training_job

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "custom" / "src"
USER_MODULE = "forecast_nets"
WINDOW = 24
EPOCHS = 3


def _push(store: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(
            ["source", "push", str(SOURCE), "--store", store.as_uri(), "--name", "forecast-cnn"]
        )
    assert code == 0
    return out.getvalue().strip()


def _operator_side(manifest: Path) -> None:
    """What the operator does with the manifest: validate it (admission, `modelops validate`).
    The source folder is importable meanwhile, so an import attempt would succeed and show."""
    sys.path.insert(0, str(SOURCE))
    try:
        resource, problems = parse_resource(yaml.safe_load(manifest.read_text()))
        assert not problems and resource is not None, problems
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["validate", str(manifest)]) == 0
    finally:
        sys.path.remove(str(SOURCE))


@pytest.fixture(scope="module")
def custom_run(
    ray_session: Any, series_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The example CNN pushed as a source archive and trained in a separate driver process."""
    assert USER_MODULE not in sys.modules, "another test imported the user's module first"
    work = tmp_path_factory.mktemp("custom")
    store = work / "models"
    source = _push(store)
    spec = series_spec(series_dir, store, "custom", resources={"workers": 2})
    spec["model"] = {
        "architecture": "custom",
        "task": "forecasting",
        "factory": "forecast_nets.cnn:build",
        "params": {"channels": 16, "kernel": 3, "depth": 2, "dropout": 0.0},
        "source": source,
    }
    spec["training"]["epochs"] = EPOCHS
    spec["output"]["modelName"] = "series-cnn"
    job = training_job("series-cnn", spec)
    manifest = work / "trainingjob.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "modelops.dev/v1alpha1",
                "kind": "TrainingJob",
                "metadata": {"name": "series-cnn"},
                "spec": job.spec.to_dict(),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    driver = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelops_runtime",
            "train",
            "--spec",
            str(manifest),
            "--job-id",
            "custom-1",
            "--ray-address",
            ray_session.get_runtime_context().gcs_address,
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-5000:]
    result = json.loads(driver.stdout.strip().splitlines()[-1].split(" ", 1)[1])
    _operator_side(manifest)
    return {
        "store": store,
        "source": source,
        "job": job,
        "result": result,
        "operator_imported": USER_MODULE in sys.modules,
    }


def _torch_member(run: dict[str, Any]) -> SingleModel:
    """The trained torch module, rebuilt with the user's factory in this process."""
    from modelops_runtime.models import build_model

    folder = run["result"]["uri"]
    card = artifacts.load_card(folder)
    assert card.spec is not None
    network = build_model(card.spec, card.n_features, card.n_outputs)
    state, scaling = split_weights(
        artifacts.load_weights(artifacts.join(folder, artifacts.WEIGHTS))
    )
    network.load_state_dict(state)
    network.eval()
    return SingleModel(card=card, network=network, scaling=scaling)


def _holdout_windows(series_dir: Path, rows: int = 200) -> np.ndarray:
    values = pd.read_parquet(series_dir / "holdout")["value"].to_numpy(np.float32)
    starts = range(min(rows, len(values) - WINDOW))
    return np.stack([values[i : i + WINDOW] for i in starts])


def test_operator_side_never_imports_the_users_module(custom_run: dict[str, Any]) -> None:
    # Validation and admission read the factory as a string; only the training processes
    # (the driver subprocess and its Ray workers) import it.
    assert custom_run["operator_imported"] is False


def test_custom_network_trains_on_two_ray_workers_and_is_stored_as_onnx(
    custom_run: dict[str, Any], series_dir: Path
) -> None:
    folder = custom_run["result"]["uri"]
    card = artifacts.load_card(folder)
    assert card.weights_format == WeightsFormat.ONNX
    assert card.spec is not None and card.spec.source == custom_run["source"]
    fs, path = artifacts.filesystem(folder)
    assert fs.exists(f"{path}/{artifacts.ONNX}") and fs.exists(f"{path}/{artifacts.WEIGHTS}")
    record = artifacts.read_json(artifacts.join(folder, "training.json"))
    assert len(record["epochs"]) == EPOCHS
    # Evaluated (on the holdout) through the stored graph: better than predicting the mean.
    holdout = pd.read_parquet(series_dir / "holdout")["value"].to_numpy(np.float64)
    assert custom_run["result"]["metrics"]["mse"] < holdout.var(), custom_run["result"]["metrics"]


def test_onnx_version_predicts_what_the_torch_module_does(
    custom_run: dict[str, Any], series_dir: Path
) -> None:
    predictor = load_predictor(custom_run["result"]["uri"])
    assert type(predictor.members[0]).__name__ == "OnnxModel"
    windows = _holdout_windows(series_dir)
    expected = _torch_member(custom_run).scores(windows)
    served = predictor.scores(windows)
    assert served.shape == expected.shape == (len(windows), 1)
    np.testing.assert_allclose(
        served, expected, rtol=0, atol=1e-5 * max(1.0, float(np.abs(expected).max()))
    )


def test_server_answers_like_the_torch_module_without_the_users_code(
    custom_run: dict[str, Any], series_dir: Path, tmp_path: Path
) -> None:
    windows = _holdout_windows(series_dir, rows=17)
    expected = _torch_member(custom_run).scores(windows)
    args = ["--store", custom_run["store"].as_uri(), "--model", "series-cnn", "--version", "1"]
    env = {"PYTHONPATH": ""}  # the server's process has no path to the user's code
    with ServerProcess(args, tmp_path / "serve.log", env=env) as server:
        reply = httpx.post(
            f"{server.url}/v2/models/series-cnn/infer", json=infer_body(windows), timeout=30.0
        )
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    served = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(
        served, expected, rtol=0, atol=1e-5 * max(1.0, float(np.abs(expected).max()))
    )


def test_a_search_point_sets_the_factorys_params(custom_run: dict[str, Any]) -> None:
    from modelops_runtime.train.search_trial import apply_params

    trial = apply_params(
        custom_run["job"].spec, {"model.params.channels": 8, "model.params.dropout": 0.25}
    )
    assert trial.model.params == {"channels": 8, "kernel": 3, "depth": 2, "dropout": 0.25}
    assert isinstance(trial.model.params["channels"], int)


def test_a_factory_that_returns_no_module_fails_naming_it(tmp_path: Path) -> None:
    from modelops.api.training import ModelSpec
    from modelops_runtime.models import build_model
    from modelops_runtime.usercode import UserCodeError

    (tmp_path / "not_a_net_pkg.py").write_text(
        "def build(n_inputs, n_outputs, **kw):\n    return 'a string'\n"
        "def broken(n_inputs, n_outputs, **kw):\n    raise RuntimeError('no such layer')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        spec = ModelSpec(architecture="custom", factory="not_a_net_pkg:build")
        with pytest.raises(UserCodeError, match=r"returned str, not a torch\.nn\.Module"):
            build_model(spec, 3, 1)
        broken = ModelSpec(architecture="custom", factory="not_a_net_pkg:broken", params={"a": 1})
        with pytest.raises(
            UserCodeError, match=r"failed with n_inputs=3, n_outputs=1.*no such layer"
        ):
            build_model(broken, 3, 1)
        missing = ModelSpec(architecture="custom", factory="no_such_pkg_here.nets:build")
        with pytest.raises(UserCodeError, match=r"importing no_such_pkg_here\.nets from the image"):
            build_model(missing, 3, 1)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("not_a_net_pkg", None)
