"""Ray token authentication as the TrainingJob builders configure it, against real Ray.

A Ray head started with a job's environment (RAY_AUTH_MODE and the token from the job's
Secret) answers a caller holding that token and refuses one holding another job's
token, or none: finding 2 (a pod elsewhere in the cluster running code in the job).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops.api.training import TrainingJobSpec
from modelops.k8s.trainingjob import builders
from tests.unit.manifests import training_job

pytestmark = pytest.mark.runtime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _job_env(token: str) -> dict[str, str]:
    """The Ray head's auth environment, as the head pod of a job gets it."""
    ctx = builders.JobContext(
        name="digits", namespace="team-a", uid="uid-1",
        spec=TrainingJobSpec.model_validate(training_job()["spec"]), version=1, attempt=0,
        settings=builders.ClusterSettings(image="runtime:1"),
    )  # fmt: skip
    secret = builders.auth_secret(ctx, token)
    env = {}
    for entry in builders.head_pod(ctx)["spec"]["containers"][0]["env"]:
        if entry["name"] == "RAY_AUTH_MODE":
            env["RAY_AUTH_MODE"] = entry["value"]
        elif entry["name"] == "RAY_AUTH_TOKEN":
            key = entry["valueFrom"]["secretKeyRef"]["key"]
            env["RAY_AUTH_TOKEN"] = base64.b64decode(secret["data"][key]).decode()
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("ray-home")
    port = _free_port()
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env.update(_job_env("token-of-job-a-0123456789abcdef0123"))
    command = [
        "ray", "start", "--head", f"--port={port}", f"--ray-client-server-port={_free_port()}",
        "--num-cpus=0", "--include-dashboard=false", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--temp-dir={home / 'ray'}", "--block",
    ]  # fmt: skip
    log = (home / "head.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield f"127.0.0.1:{port}", home
    finally:
        # The head and everything it started share its process group: end exactly that.
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def _health(address: str, home: Path, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_MODE", None)
    if token is not None:
        env.update(_job_env(token))
    return subprocess.run(
        ["ray", "health-check", "--address", address],
        env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_the_jobs_token_opens_its_ray_cluster_and_no_other_does(head: tuple[str, Path]) -> None:
    address, home = head
    deadline = time.monotonic() + 90
    while (ok := _health(address, home, "token-of-job-a-0123456789abcdef0123")).returncode:
        assert time.monotonic() < deadline, ok.stderr[-2000:]
        time.sleep(2)
    other = _health(address, home, "token-of-job-b-0123456789abcdef0123")
    assert other.returncode != 0
    assert "Authentication token is missing or incorrect" in other.stderr
