"""The protocol-independent data plane: health, metadata, infer, feedback, admin.

Adapters (the REST one in `rest.py`) translate transport requests into these
calls and ServeErrors into statuses; everything a model server decides lives here,
so metrics and routing behave the same whatever the transport.

Hot swap and routing changes run under one lock: the new version is loaded in the
background while the old one keeps answering, the Routing object is replaced in a
single assignment, and versions no longer referenced are retired only after
their queued requests are answered. No request sees a version disappear.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import numpy as np

from modelops.api.artifact import ModelCard
from modelops_runtime.serve import protocol
from modelops_runtime.serve.errors import (
    InvalidInput,
    ModelNotFound,
    NotFound,
    NotReady,
    ServeError,
    TooManyRows,
)
from modelops_runtime.serve.feedback import (
    PredictionLog,
    RollingScore,
    Served,
    agreement,
    outcomes,
    parse_labels,
)
from modelops_runtime.serve.metrics import LiveState, ServeMetrics
from modelops_runtime.serve.peers import Peers, address_of, forward
from modelops_runtime.serve.registry import (
    LoadedVersion,
    ModelRegistry,
    VersionSpec,
    parse_members,
    resolve_version,
)
from modelops_runtime.serve.routing import Routing, parse_routing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class InferResult:
    body: Any  # JSON bytes, or what the request's codec encodes (a gRPC message)
    version: str
    # The id feedback for this answer must name: issued here, unguessable, good once.
    feedback_id: str = ""


class InferCodec(Protocol):
    """A transport's request decoding and answer encoding around the shared infer path."""

    def decode(self, card: ModelCard) -> protocol.InferRequest: ...

    def encode(
        self,
        card: ModelCard,
        model_version: str,
        request_id: str,
        outputs: protocol.Outputs,
        requested: tuple[str, ...] | None,
    ) -> Any: ...


@dataclass(slots=True)
class _ShadowTally:
    compared: int = 0
    agreed: int = 0


class DataPlane:
    """One model's serving state: loaded versions, the traffic split, quality records."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: ServeMetrics,
        *,
        feedback_capacity: int,
        accuracy_window: int,
        peers: Peers | None = None,
    ) -> None:
        self.model = registry.model
        # With peers, feedback ids name this server and feedback for a peer's id is
        # forwarded there (serve.peers): behind a Service it lands on any replica.
        self.peers = peers
        self._session: aiohttp.ClientSession | None = None
        self.registry = registry
        self.metrics = metrics
        self.routing: Routing | None = None
        self.draining = False
        self._log = PredictionLog(feedback_capacity)
        self._window = accuracy_window
        self._quality: dict[str, RollingScore] = {}
        self._shadow: dict[str, _ShadowTally] = {}
        self._in_flight = 0
        self._admin_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        metrics.attach_live(self.live_state)

    # -- health and metadata -------------------------------------------------

    def ready(self) -> bool:
        return not self.draining and self.routing is not None

    def _check(self, name: str) -> None:
        if name != self.model:
            raise ModelNotFound(name)

    def model_ready(self, name: str, version: str | None) -> bool:
        self._check(name)
        if version is None:
            return self.ready()
        return version in self.registry.versions

    def metadata(self, name: str, version: str | None) -> dict[str, Any]:
        self._check(name)
        if version is None:
            if self.routing is None:
                raise NotReady(f"model '{name}' is still loading")
            version = self.routing.stable
        loaded = self.registry.get(version)
        return protocol.model_metadata(loaded.card, sorted(self.registry.versions))

    # -- inference -----------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        body: bytes,
        headers: Mapping[str, str],
        codec: InferCodec | None = None,
    ) -> InferResult:
        """Answer one infer request; records its status and latency per version.

        `codec` decodes the request and encodes the answer for a transport other than
        REST JSON (gRPC, binary tensors); `body` is then unused.
        """
        started = time.perf_counter()
        label = ""
        self._in_flight += 1
        try:
            self._check(name)
            mirror = None
            if version is None:
                if self.routing is None or self.draining:
                    raise NotReady(f"model '{name}' is not ready")
                key = headers.get("x-routing-key") or headers.get("x-request-id")
                label, mirror = self.routing.pick(key)
            else:
                label = version
            served = self.registry.get(label)
            request = codec.decode(served.card) if codec else protocol.decode_infer(body, served.card)
            limit = served.batcher.max_batch_size
            if len(request.rows) > limit:
                # One request is never split: it would run as a batch of any size (memory,
                # latency of everyone queued behind it) however small maxBatchSize is.
                raise TooManyRows(len(request.rows), limit)
            try:
                future = served.batcher.submit(request.rows)
            except ServeError as error:
                if error.status == 429:
                    self.metrics.rejected.labels(self.model, label).inc()
                raise
            # Feedback is keyed by an id this server issues, never by the client's own id:
            # ids a client chose (or a counter) can be guessed by anyone who wants to
            # steer the canary's accuracy with made-up labels.
            feedback_id = self._new_id()
            request_id = request.id or headers.get("x-request-id") or feedback_id
            record = Served(label)
            if mirror is not None:
                self._mirror(mirror, request.rows, future, record)
            self._log.record(feedback_id, record)
            outputs = await future
            record.predictions = outputs.predictions
            encode = codec.encode if codec else protocol.encode_infer
            answer = encode(served.card, label, request_id, outputs, request.outputs)
        except ServeError as error:
            self.metrics.observe_request(label, error.status, time.perf_counter() - started)
            raise
        except BaseException:
            self.metrics.observe_request(label, 500, time.perf_counter() - started)
            raise
        finally:
            self._in_flight -= 1
        self.metrics.observe_request(label, 200, time.perf_counter() - started)
        return InferResult(answer, label, feedback_id)

    def _new_id(self) -> str:
        token = secrets.token_urlsafe(16)
        return self.peers.new_id(token) if self.peers is not None else token

    def _mirror(
        self, label: str, rows: np.ndarray, primary: asyncio.Future[protocol.Outputs], record: Served
    ) -> None:
        """Send a copy to the shadow version; never delays or fails the real request."""
        shadow = self.registry.versions.get(label)
        if shadow is None:
            return
        try:
            future = shadow.batcher.submit(rows)
        except ServeError:
            return  # the shadow is overloaded: skip this comparison
        task = asyncio.get_running_loop().create_task(self._compare(shadow, primary, future, record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _compare(
        self,
        shadow: LoadedVersion,
        primary: asyncio.Future[protocol.Outputs],
        mirrored: asyncio.Future[protocol.Outputs],
        record: Served,
    ) -> None:
        try:
            stable_out, shadow_out = await asyncio.gather(primary, mirrored)
        except (ServeError, asyncio.CancelledError):
            return
        record.shadow_version = shadow.label
        record.shadow_predictions = shadow_out.predictions
        same = agreement(shadow.card, stable_out.predictions, shadow_out.predictions)
        tally = self._shadow.setdefault(shadow.label, _ShadowTally())
        tally.compared += len(same)
        tally.agreed += int(same.sum())
        self.metrics.shadow_compared.labels(self.model, shadow.label).inc(len(same))
        self.metrics.shadow_agreed.labels(self.model, shadow.label).inc(int(same.sum()))

    # -- feedback ------------------------------------------------------------

    async def feedback(self, name: str, body: bytes, forwarded: bool = False) -> dict[str, Any]:
        """Take ground-truth labels for earlier request ids (one object or a list).

        Ids another replica issued go to that replica (once: `forwarded` requests are
        answered from this server's own log only).
        """
        self._check(name)
        payload = protocol.loads_any(body, "feedback")
        items = payload if isinstance(payload, list) else [payload]
        if self.routing is None:
            raise NotReady(f"model '{name}' is not ready")
        card = self.registry.get(self.routing.stable).card
        parsed = [parse_labels(item, card) for item in items]  # validate all before applying
        accepted, unknown = 0, []
        remote: dict[str, list[Any]] = {}
        for item, (request_id, labels) in zip(items, parsed, strict=True):
            record = self._log.get(request_id)
            if record is None or record.predictions is None:
                peer = None if forwarded else await self._peer_of(request_id)
                if peer is not None:
                    remote.setdefault(peer, []).append(item)
                else:
                    unknown.append(request_id)
                continue
            if len(labels) != len(record.predictions):
                raise InvalidInput(
                    f"feedback for '{request_id}' has {len(labels)} labels; the request had "
                    f"{len(record.predictions)} rows"
                )
            self._score(record.version, card, record.predictions, labels)
            if record.shadow_version is not None and record.shadow_predictions is not None:
                self._score(record.shadow_version, card, record.shadow_predictions, labels)
            self._log.forget(request_id)  # once: a replay cannot weigh one answer many times
            accepted += 1
        if remote:
            session = self._http()
            answers = await asyncio.gather(
                *(forward(session, peer, name, batch) for peer, batch in remote.items())
            )
            for answer in answers:
                accepted += answer["accepted"]
                unknown += answer["unknown"]
        if not isinstance(payload, list) and unknown:
            raise NotFound(f"no recent prediction with id '{unknown[0]}' (it may have been evicted)")
        return {"accepted": accepted, "unknown": unknown}

    async def _peer_of(self, request_id: str) -> str | None:
        address = address_of(request_id) if self.peers is not None else None
        if address is None or self.peers is None:
            return None
        return address if await self.peers.peer(address) else None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _score(self, version: str, card: Any, predictions: np.ndarray, labels: np.ndarray) -> None:
        score = self._quality.setdefault(version, RollingScore(self._window))
        score.add(outcomes(card, predictions, labels))
        self.metrics.feedback.labels(self.model, version).inc(len(labels))

    def quality(self) -> dict[str, Any]:
        """Feedback and shadow summaries per version (what the operator reads)."""
        key = "accuracy" if self._classifier() else "meanAbsoluteError"
        return {
            "feedback": {v: {key: s.value, "rows": s.total} for v, s in self._quality.items()},
            "shadow": {
                v: {"compared": t.compared, "agreement": t.agreed / t.compared if t.compared else None}
                for v, t in self._shadow.items()
            },
        }

    def _classifier(self) -> bool:
        loaded = self.registry.versions.get(self.routing.stable) if self.routing else None
        return loaded is None or loaded.predictor.is_classifier

    # -- admin: routing and hot swap -------------------------------------------

    def routing_state(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "routing": self.routing.to_json() if self.routing else None,
            "loaded": sorted(self.registry.versions),
            **self.quality(),
        }

    async def start(self, stable: VersionSpec, candidate: VersionSpec | None, weight: float, shadow: bool) -> None:
        """Load the first versions and open for traffic."""
        await self.registry.ensure(stable)
        if candidate is not None:
            await self.registry.ensure(candidate)
        self.routing = Routing(stable.label, candidate.label if candidate else None, weight, shadow)

    async def set_routing(self, body: bytes) -> dict[str, Any]:
        """PUT /v2/admin/routing: change the split; numeric versions not loaded are loaded first."""
        payload = protocol.loads_object(body, "routing")
        async with self._admin_lock:
            if self.routing is None:
                raise NotReady("the server is still loading its first version")
            new = parse_routing(payload, self.routing)
            for label in sorted(new.versions()):
                if label not in self.registry.versions:
                    if not label.isdigit():
                        raise NotFound(f"version '{label}' is not loaded; load it with POST /v2/admin/load")
                    await self.registry.ensure(VersionSpec.single(int(label)))
            self._switch(new)
        return self.routing_state()

    async def load(self, body: bytes) -> dict[str, Any]:
        """POST /v2/admin/load: load a version (or ensemble) in the background, then route to it."""
        payload = protocol.loads_object(body, "load")
        unknown = set(payload) - {"version", "members", "method", "role", "weight", "shadow"}
        if unknown:
            raise InvalidInput(f"load: unknown fields {sorted(unknown)}")
        role = payload.get("role", "stable")
        if role not in ("stable", "candidate"):
            raise InvalidInput("load: 'role' must be 'stable' or 'candidate'")
        spec = self._spec_of(payload)
        async with self._admin_lock:
            if self.routing is None:
                raise NotReady("the server is still loading its first version")
            await self.registry.ensure(spec)
            current = self.routing
            if role == "stable":
                candidate = None if current.candidate == spec.label else current.candidate
                change: dict[str, Any] = {"stable": spec.label, "candidate": candidate}
                if candidate is None:
                    change.update(weight=0, shadow=False)
            else:
                change = {
                    "candidate": spec.label,
                    "weight": payload.get("weight", 0),
                    "shadow": payload.get("shadow", False),
                }
            self._switch(parse_routing(change, current))
        return self.routing_state()

    def _spec_of(self, payload: dict[str, Any]) -> VersionSpec:
        members = payload.get("members")
        version = payload.get("version")
        if members is None:
            if version is None or isinstance(version, bool) or not isinstance(version, str | int):
                raise InvalidInput("load: give 'version' (a number or 'latest'), or 'members'")
            return VersionSpec.single(resolve_version(self.registry.store_uri, self.model, version))
        if not isinstance(members, str):
            raise InvalidInput("load: 'members' must be a string like '1,2' or '1:30,2:70'")
        label = None if version is None else str(version)
        if label is not None and label.isdigit():
            raise InvalidInput("load: an ensemble's 'version' is a name, not a number")
        return parse_members(members, str(payload.get("method", "mean")), label)

    def _switch(self, new: Routing) -> None:
        old = self.routing
        self.routing = new  # one assignment: requests see the old split or the new one
        self.metrics.swaps.labels(self.model).inc()
        log.info("routing of %s: %s", self.model, new.to_json())
        if old is None:
            return
        for label in old.versions() - new.versions():
            task = asyncio.get_running_loop().create_task(self.registry.retire(label))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- metrics ---------------------------------------------------------------

    def live_state(self) -> LiveState:
        state = LiveState(in_flight=self._in_flight, feedback_log_size=len(self._log))
        for label, loaded in list(self.registry.versions.items()):
            state.queue_depth[label] = loaded.batcher.depth
        for label, score in list(self._quality.items()):
            value = score.value
            if value is None:
                continue
            loaded = self.registry.versions.get(label)
            if loaded is not None and not loaded.predictor.is_classifier:
                state.mean_abs_error[label] = value
            else:
                state.accuracy[label] = value
        for label, tally in list(self._shadow.items()):
            if tally.compared:
                state.agreement[label] = tally.agreed / tally.compared
        if self.routing is not None:
            state.traffic_percent = self.routing.weights()
        return state

    async def close(self) -> None:
        """Finish every queued request, then stop the batchers."""
        self.draining = True
        for label in list(self.registry.versions):
            await self.registry.retire(label)
        if self._session is not None:
            await self._session.close()
