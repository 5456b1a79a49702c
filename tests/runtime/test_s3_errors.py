"""A misconfigured s3:// store fails at once with one line naming the URI and what to fix
(missing bucket, refused credentials, no server at the endpoint), and never shows a
secret. Real processes, as a pod runs them, against the real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelops.lifecycle.training_report import INPUT_ERROR_EXIT_CODE
from tests.runtime.s3_helpers import fresh_prefix
from tests.runtime.train_helpers import digits_spec
from tests.s3_server import SECRET_KEY, free_ports

pytestmark = pytest.mark.runtime

WRONG_SECRET = "not-the-secret-0123456789abcdef"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "modelops_runtime", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def _predict(store: str) -> list[str]:
    return ["predict-batch", "--store", store, "--model", "m", "--input", f"{store}/in",
            "--output", f"{store}/out"]


@pytest.mark.parametrize(
    ("case", "exit_code", "expected"),
    [
        ("bucket", INPUT_ERROR_EXIT_CODE, "bucket 'no-such-bucket' does not exist at http://127.0.0.1:"),
        ("secret", INPUT_ERROR_EXIT_CODE, "access to bucket 'modelops' at http://127.0.0.1:"),
        ("endpoint", 1, "no S3 server answered at http://127.0.0.1:"),
    ],
)
def test_a_misconfigured_store_fails_naming_the_uri_and_no_secret(
    s3_server: Any, case: str, exit_code: int, expected: str
) -> None:
    env = s3_server.env()
    store = fresh_prefix("errors")
    if case == "bucket":
        store = "s3://no-such-bucket/models"
    elif case == "secret":
        env["AWS_SECRET_ACCESS_KEY"] = WRONG_SECRET
    else:
        env["MODELOPS_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{free_ports(1)[0]}"
        env["MODELOPS_S3_MAX_ATTEMPTS"] = "2"
    done = _run(_predict(store), env)
    output = done.stdout + done.stderr
    assert done.returncode == exit_code, output
    # The URI named is the one the command touched first: the store's folder of model `m`.
    assert f"error: {store}/m: {expected}" in done.stderr
    assert "Traceback" not in output
    assert SECRET_KEY not in output and WRONG_SECRET not in output


def test_training_from_a_missing_bucket_is_an_input_error_not_retried(
    s3_server: Any, digits_dir: Path, tmp_path: Path
) -> None:
    import yaml

    spec = digits_spec(digits_dir, Path("/unused"), data={"uri": "s3://no-such-bucket/data"},
                       output={"storeUri": fresh_prefix("errors")})
    manifest = {"apiVersion": "modelops.dev/v1alpha1", "kind": "TrainingJob",
                "metadata": {"name": "missing"}, "spec": spec}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(manifest))
    done = _run(["train", "--spec", str(tmp_path / "job.yaml"), "--local"], s3_server.env())
    assert done.returncode == INPUT_ERROR_EXIT_CODE, done.stdout + done.stderr
    assert "s3://no-such-bucket/data: bucket 'no-such-bucket' does not exist" in done.stderr
    assert SECRET_KEY not in done.stdout + done.stderr
