"""Loaded model versions, keyed by label, and how they are loaded and unloaded.

A label is the version number as a string ("3") for a stored version, or a name
for an ensemble composed at load time from separately stored versions
(`--members 1,2:30`). Loading reads the store and builds the network in a loader
thread (never on the event loop, never on the forward thread) and runs one warm-up
forward, so a swap only starts routing to a version that already answers. Each
loaded version has its own Batcher; all share the one forward thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from modelops.api.artifact import ModelCard
from modelops.api.training import EnsembleMethod
from modelops_runtime import artifacts
from modelops_runtime.errors import ModelFileError
from modelops_runtime.predictor import Predictor, compose, load_predictor
from modelops_runtime.serve.batching import Batcher
from modelops_runtime.serve.compiled import traced
from modelops_runtime.serve.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    VersionNotFound,
    VersionUnloadable,
)
from modelops_runtime.serve.metrics import ServeMetrics
from modelops_runtime.serve.protocol import Outputs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """What to load: one stored version, or several combined as an ensemble."""

    label: str
    versions: tuple[int, ...]
    method: EnsembleMethod | None = None
    weights: tuple[float, ...] = ()

    @classmethod
    def single(cls, version: int) -> VersionSpec:
        return cls(str(version), (version,))


def parse_members(text: str, method: str, label: str | None = None) -> VersionSpec:
    """`1,2,3` or `1:30,2:70` (weights for the weighted method) into a VersionSpec."""
    try:
        ensemble_method = EnsembleMethod(method)
    except ValueError:
        raise InvalidInput(f"unknown ensemble method '{method}'; use mean, vote or weighted") from None
    versions, weights = [], []
    for part in text.split(","):
        number, _, weight = part.strip().partition(":")
        if not number.isdigit() or int(number) < 1:
            raise InvalidInput(f"ensemble member '{part}' is not a version number")
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise InvalidInput(f"ensemble member '{part}' has a weight that is not a number") from None
        versions.append(int(number))
    if len(versions) < 2:
        raise InvalidInput("an ensemble needs at least two member versions")
    if ensemble_method == EnsembleMethod.WEIGHTED and (min(weights) < 0 or sum(weights) <= 0):
        raise InvalidInput("weighted ensemble weights must be non-negative with a positive sum")
    name = label or "+".join(str(v) for v in versions)
    return VersionSpec(name, tuple(versions), ensemble_method, tuple(weights))


def resolve_version(store_uri: str, model: str, version: str | int) -> int:
    """A version number, with 'latest' meaning the newest finished version in the store."""
    if isinstance(version, int) or str(version).isdigit():
        return int(version)
    if version != "latest":
        raise InvalidInput(f"version '{version}' is neither a number nor 'latest'")
    found = artifacts.list_versions(store_uri, model)
    if not found:
        raise NotFound(f"model '{model}' has no finished version in {store_uri}")
    return found[-1]


def load_spec(store_uri: str, model: str, spec: VersionSpec) -> Predictor:
    """Load (blocking) the predictor of a spec from the store."""
    predictors = []
    for version in spec.versions:
        folder = artifacts.version_uri(store_uri, model, version)
        fs, path = artifacts.filesystem(artifacts.join(folder, artifacts.CARD))
        if not fs.exists(path):
            raise NotFound(f"version {version} of model '{model}' is not in {store_uri}")
        try:
            predictors.append(load_predictor(folder))
        except ModelFileError as error:
            raise VersionUnloadable(
                f"version {version} of model '{model}' cannot be loaded: {error}"
            ) from None
    if spec.method is None:
        return predictors[0]
    weights = list(spec.weights) or [1.0] * len(predictors)
    try:
        return compose(predictors, spec.method, weights, [f"v{v}" for v in spec.versions])
    except ValueError as error:
        raise InvalidInput(f"cannot combine versions {list(spec.versions)}: {error}") from None


@dataclass(slots=True)
class LoadedVersion:
    label: str
    spec: VersionSpec
    predictor: Predictor
    batcher: Batcher

    @property
    def card(self) -> ModelCard:
        return self.predictor.card


class ModelRegistry:
    """The versions this process serves, loaded and retired without pausing traffic."""

    def __init__(
        self,
        store_uri: str,
        model: str,
        metrics: ServeMetrics,
        forward_executor: Executor,
        loader_executor: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        timeout_s: float,
    ) -> None:
        self.store_uri = store_uri
        self.model = model
        self._metrics = metrics
        self._forward_executor = forward_executor
        self._loader_executor = loader_executor
        self._batching = {
            "max_batch_size": max_batch_size,
            "max_wait_s": max_wait_s,
            "max_queue": max_queue,
            "timeout_s": timeout_s,
        }
        self.versions: dict[str, LoadedVersion] = {}
        self._loading: dict[str, asyncio.Future[LoadedVersion]] = {}

    def get(self, label: str) -> LoadedVersion:
        loaded = self.versions.get(label)
        if loaded is None:
            raise VersionNotFound(self.model, label)
        return loaded

    async def ensure(self, spec: VersionSpec) -> LoadedVersion:
        """The loaded version for a spec, loading it in the background if needed."""
        loaded = self.versions.get(spec.label)
        if loaded is not None:
            if loaded.spec != spec:
                raise Conflict(f"label '{spec.label}' is already loaded with other members")
            return loaded
        if spec.label in self._loading:
            return await asyncio.shield(self._loading[spec.label])
        loop = asyncio.get_running_loop()
        future: asyncio.Future[LoadedVersion] = loop.create_future()
        self._loading[spec.label] = future
        try:
            predictor = await loop.run_in_executor(self._loader_executor, self._load, spec)
            loaded = LoadedVersion(spec.label, spec, predictor, self._batcher(spec.label, predictor))
            loaded.batcher.start()
            self.versions[spec.label] = loaded
            future.set_result(loaded)
            log.info("loaded version %s of %s", spec.label, self.model)
            return loaded
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: the caller re-raises it
            raise
        finally:
            del self._loading[spec.label]

    def _load(self, spec: VersionSpec) -> Predictor:
        predictor = traced(load_spec(self.store_uri, self.model, spec))
        shape = [1 if d == -1 else d for d in predictor.card.inputs[0].shape]
        predictor.scores(np.zeros(shape, dtype=np.float32))  # warm-up before any traffic
        return predictor

    def _batcher(self, label: str, predictor: Predictor) -> Batcher:
        observe = self._metrics.batch_observer(label, self._class_names(predictor))

        def forward(rows: np.ndarray) -> Outputs:
            scores = predictor.scores(rows)
            predictions = predictor.decide(scores)
            observe(predictions)
            return Outputs(scores, predictions)

        return Batcher(label, forward, self._forward_executor, **self._batching)  # type: ignore[arg-type]

    @staticmethod
    def _class_names(predictor: Predictor) -> list[str] | None:
        card = predictor.card
        if not predictor.is_classifier:
            return None
        if card.classes:
            return list(card.classes)
        return [str(i) for i in range(max(card.n_outputs, 2))]

    async def retire(self, label: str) -> None:
        """Stop routing-by-label to a version, finish its queue, drop it."""
        loaded = self.versions.pop(label, None)
        if loaded is not None:
            await loaded.batcher.close()
            log.info("unloaded version %s of %s", label, self.model)
