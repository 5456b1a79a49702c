"""The run a job start belongs to: its checkpoint scope, its pin, its published version.

A run is (job id, spec digest, data digest) (see `modelops.lifecycle.lineage`). Its
folder `<store>/<model>/checkpoints/<job-id>/<run-key>/` holds the epoch checkpoints
and `run.json`, the pin: the warm-start parent resolved at the first start (so a resume
reads the same shards even when a newer version appeared meanwhile) and the version
number the run last tried to publish (so a rerun finds its version in one read).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from modelops.api.artifact import SnapshotManifest
from modelops.api.training import TrainingJobSpec
from modelops.lifecycle.lineage import run_key, spec_digest
from modelops_runtime import artifacts, publish
from modelops_runtime.data import shards as shard_files
from modelops_runtime.train import checkpoint, versions

PIN = "run.json"
_PUBLISH_TRIES = 100


@dataclass(frozen=True)
class Run:
    job_id: str
    key: str
    spec: str
    data: str
    root: str

    def owner(self) -> dict[str, Any]:
        """What a published version records about the run that made it."""
        return {"jobId": self.job_id, "run": self.key, "spec": self.spec, "data": self.data}


def scope(spec: TrainingJobSpec, job_id: str, current: SnapshotManifest) -> Run:
    spec_hash, data_hash = spec_digest(spec), shard_files.digest(current)
    key = run_key(job_id, spec_hash, data_hash)
    root = checkpoint.run_root(spec.output.store_uri, spec.output.model_name, job_id, key)
    return Run(job_id, key, spec_hash, data_hash, root)


def read_pin(run: Run) -> dict[str, Any]:
    uri = artifacts.join(run.root, PIN)
    fs, path = artifacts.filesystem(uri)
    if not fs.exists(path):
        return {}
    pin: dict[str, Any] = artifacts.read_json(uri)
    return pin


def write_pin(run: Run, **fields: Any) -> None:
    artifacts.write_json(artifacts.join(run.root, PIN), {**read_pin(run), **fields})


def published(run: Run, store: str, name: str, given: int | None) -> int | None:
    """The finished version this run already published, if any."""
    candidates = [v for v in (read_pin(run).get("version"), given) if isinstance(v, int)]
    finished = set(artifacts.list_versions(store, name)) if candidates else set()
    for version in dict.fromkeys(candidates):
        if version in finished and publish.same_run(publish.owner(artifacts.version_uri(store, name, version)), run.owner()):
            return version
    return None


def earlier_runs(store: str, name: str, run: Run) -> list[str]:
    """Other runs of the same job: its spec or its data was different then."""
    fs, root = artifacts.filesystem(checkpoint.job_root(store, name, run.job_id))
    if not fs.exists(root):
        return []
    names = [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(root, detail=False)]
    return sorted(n for n in names if n != run.key and fs.isdir(f"{root}/{n}"))


def publish_version(run: Run, store: str, name: str, staging: str, number: int) -> int:
    """Publish the staged version as `v<number>`, or the next free number when it is taken.

    Returns the number it was published under.
    """
    for _ in range(_PUBLISH_TRIES):
        write_pin(run, version=number)
        try:
            publish.publish(staging, artifacts.version_uri(store, name, number), run.owner())
            return number
        except publish.VersionTaken as taken:
            if publish.same_run(taken.owner, run.owner()) and number in artifacts.list_versions(store, name):
                return number  # published by this run before it died; never written twice
            number = max(number + 1, publish.next_number(store, name))
            print(f"modelops: {taken}; publishing as v{number} instead", file=sys.stderr, flush=True)
            versions.renumber(staging, number)
    raise RuntimeError(f"could not publish {name}: {_PUBLISH_TRIES} version numbers were taken in a row")
