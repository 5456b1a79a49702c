"""Helpers for the s3:// tests: a fresh prefix per test, and uploads and listings through
a plain botocore client, so what the tests check does not go through the code under test."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from modelops_runtime import artifacts
from modelops_runtime.predictor import load_predictor
from tests.runtime.train_helpers import digits_spec
from tests.s3_server import S3Server

BUCKET = "modelops"


def fresh_prefix(name: str) -> str:
    """`s3://modelops/<name>-<random>`: tests sharing the server never see each other's objects."""
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}"


def key_of(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[1]


def upload(server: S3Server, folder: Path, uri: str) -> None:
    """Every file under `folder` to the same relative keys under `uri`."""
    client = server.client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(Bucket=BUCKET, Key=f"{key_of(uri)}/{path.relative_to(folder).as_posix()}",
                          Body=path.read_bytes())


def keys(server: S3Server, uri: str) -> list[str]:
    """Keys under `uri`, relative to it, sorted."""
    client: Any = server.client()
    prefix = key_of(uri).rstrip("/") + "/"
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
    return sorted(found)


def read(server: S3Server, uri: str) -> bytes:
    body: bytes = server.client().get_object(Bucket=BUCKET, Key=key_of(uri))["Body"].read()
    return body


def digits_on_s3(server: S3Server, digits: Path, name: str, epochs: int) -> tuple[dict[str, Any], str]:
    """The digits shards uploaded under a fresh prefix, and a spec that trains from them
    into the store `<prefix>/models`; returns (spec, store)."""
    root = fresh_prefix(name)
    upload(server, digits, f"{root}/data")
    store = f"{root}/models"
    spec = digits_spec(
        digits, Path("/unused"),
        data={"uri": f"{root}/data/train", "holdoutUri": f"{root}/data/holdout"},
        training={"epochs": epochs}, output={"storeUri": store},
    )
    return spec, store


def assert_predicted(server: S3Server, store: str, output: str, data: dict[str, np.ndarray]) -> None:
    """The output folder holds exactly one whole prediction shard per input shard (and the
    progress file), each with every row once and the predictions of model `m` v1."""
    assert keys(server, output) == ["_progress.json", *[f"{name}.parquet" for name in data]]
    predictor = load_predictor(artifacts.version_uri(store, "m", 1))
    for name, x in data.items():
        table = pq.read_table(io.BytesIO(read(server, f"{output}/{name}.parquet")))
        np.testing.assert_array_equal(table["row"].to_numpy(), np.arange(len(x)))
        np.testing.assert_array_equal(table["prediction"].to_numpy(), predictor.predict(x))
