"""Shared fixtures of the runtime tests: one Ray instance per session, example datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray with 2 CPUs, shared by every test that needs Ray."""
    # Ray Train's settings are the runtime's own (`distributed.tune_environment`).
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as 4 training shards and a holdout shard."""
    from modelops_runtime.datasets import write_digits

    root = tmp_path_factory.mktemp("digits")
    write_digits(root, shards=4, holdout_fraction=0.2, seed=0)
    return root


@pytest.fixture(scope="session")
def series_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic sunspot-like series: 4 training shards, a holdout continuation."""
    from modelops_runtime.datasets import write_sunspots

    root = tmp_path_factory.mktemp("series")
    write_sunspots(root / "train", shards=4, rows=3200, seed=0, holdout=root / "holdout", holdout_rows=800)
    return root


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real SeaweedFS S3 gateway on loopback with bucket `modelops`; fails when weed is unbuilt."""
    from tests.s3_server import S3Server

    try:
        server = S3Server(tmp_path_factory.mktemp("seaweedfs"), buckets=["modelops"])
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The server, with this process's environment pointing at it as a pod's Secret would."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
