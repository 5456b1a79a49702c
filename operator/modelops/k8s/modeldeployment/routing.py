"""How a traffic split reaches the servers: the operator calls each server's admin endpoint.

Chosen over "each stable server proxies a share to a candidate Service" because
the split is then exact and per request (a hash of `x-routing-key` keeps a
client on one side), a step needs no pod restart and no second hop, and a
promotion is a hot swap inside each server: the candidate is already loaded, the
routing object is replaced in one assignment, the old version finishes what it
queued. No request fails during a promotion or a rollback.

Level-based: every pass reads each server's routing (GET /v2/admin/routing) and
writes the wanted one (PUT) only where it differs, so a server that restarted
from the pod template (which names only the stable version) gets the candidate
back on the next pass.

Every call carries the ModelDeployment's own admin token (credentials.py): the servers
of one deployment refuse the token of any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelops.k8s.controller import bounded
from modelops.k8s.modeldeployment.metrics_source import Endpoint

log = logging.getLogger(__name__)

# Loading a version can take a while (the PUT returns once it is loaded and routed).
PUT_TIMEOUT = aiohttp.ClientTimeout(total=120.0)
GET_TIMEOUT = aiohttp.ClientTimeout(total=3.0)


@dataclass(frozen=True)
class Split:
    """The routing every server should have."""

    stable: str
    candidate: str | None = None
    weight: float = 0.0
    shadow: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "stable": self.stable,
            "candidate": self.candidate,
            "weight": self.weight,
            "shadow": self.shadow,
        }

    def matches(self, routing: dict[str, Any] | None) -> bool:
        if not routing:
            return False
        candidate = routing.get("candidate")
        return (
            str(routing.get("stable")) == self.stable
            and (None if candidate is None else str(candidate)) == self.candidate
            and float(routing.get("weight") or 0.0) == float(self.weight)
            and bool(routing.get("shadow")) == self.shadow
        )


@dataclass(frozen=True)
class RoutingResult:
    """Which servers have the split now, and which could not be reached or refused."""

    current: tuple[str, ...]
    changed: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]
    state: dict[str, dict[str, Any]]

    @property
    def complete(self) -> bool:
        return not self.failed


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _answer(response: aiohttp.ClientResponse, what: str) -> dict[str, Any]:
    """The JSON object of a 200 answer; anything else is an error naming what came back."""
    try:
        text = await bounded.read_text(response, bounded.ANSWER_LIMIT)
    except bounded.TooLarge as error:
        raise RuntimeError(f"{what}: HTTP {response.status}: {error}") from error
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if response.status != 200 or not isinstance(body, dict):
        detail = body.get("error", body) if isinstance(body, dict) else text[:200]
        raise RuntimeError(f"{what}: HTTP {response.status}: {detail}")
    return body


async def read_state(
    session: aiohttp.ClientSession, endpoint: Endpoint, *, token: str
) -> dict[str, Any]:
    """The server's routing, loaded versions and quality summary."""
    url = f"{endpoint.url}/v2/admin/routing"
    async with session.get(url, headers=_headers(token), timeout=GET_TIMEOUT) as response:
        return await _answer(response, "GET routing")


async def _put(
    session: aiohttp.ClientSession, endpoint: Endpoint, split: Split, token: str
) -> dict[str, Any]:
    url = f"{endpoint.url}/v2/admin/routing"
    async with session.put(
        url, json=split.to_json(), headers=_headers(token), timeout=PUT_TIMEOUT
    ) as response:
        return await _answer(response, "PUT routing")


async def apply_split(
    session: aiohttp.ClientSession, endpoints: Sequence[Endpoint], split: Split, *, token: str
) -> RoutingResult:
    """Make every reachable server route like `split`; write only where it differs.

    `token` is the admin token of the ModelDeployment the servers belong to."""

    async def one(endpoint: Endpoint) -> tuple[Endpoint, dict[str, Any] | None, bool, str | None]:
        try:
            state = await read_state(session, endpoint, token=token)
            if split.matches(state.get("routing")):
                return endpoint, state, False, None
            state = await _put(session, endpoint, split, token)
            log.info("routing of %s is now %s", endpoint.address, split.to_json())
            return endpoint, state, True, None
        except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError, ValueError) as error:
            return endpoint, None, False, str(error) or type(error).__name__

    results = await asyncio.gather(*(one(e) for e in endpoints))
    return RoutingResult(
        current=tuple(e.name for e, state, _, err in results if err is None and state),
        changed=tuple(e.name for e, _, changed, _ in results if changed),
        failed=tuple((e.name, err) for e, _, _, err in results if err is not None),
        state={e.name: state for e, state, _, err in results if state is not None},
    )
