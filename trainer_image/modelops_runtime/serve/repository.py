"""The model repository extension, as Triton defines it, mapped onto hot swap.

The repository is the store; the one model a server serves is the only model in
it, and its versions are what the index lists. Both transports call these:

    index   every stored version and every loaded label, READY when loaded
            (`ready: true` keeps only those). Read-only, so open to all.
    load    hot swap, as POST /v2/admin/load does: without parameters to the newest
            stored version (Triton's default version policy, `latest: 1`); a
            Triton model `config` whose `version_policy` names one version picks
            it; the admin load fields (`version`, `role`, `weight`, `shadow`,
            `members`, `method`) pass through as parameters.
    unload  drops the candidate (canary or shadow), or the named `version` when it
            is the candidate. The stable version is never unloaded: a replica
            always serves its model, so replacing it is a load.

Load and unload change what is served, so the adapters require the admin token
for them. Parameters arrive as plain values: JSON values over REST, the set field
of each ModelRepositoryParameter over gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from modelops_runtime import artifacts
from modelops_runtime.serve import protocol
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.errors import (
    Conflict,
    InvalidInput,
    ModelNotFound,
    NotReady,
    VersionNotFound,
)

EXTENSION = "model_repository"
READY = "READY"
UNAVAILABLE = "UNAVAILABLE"

# Admin load fields that may ride as load parameters (checked by DataPlane.load).
_LOAD_FIELDS = frozenset({"version", "role", "weight", "shadow", "members", "method"})
# Triton's unload parameter; nothing here depends on another model, so it changes nothing.
_UNLOAD_FIELDS = frozenset({"version", "unload_dependents"})


def _check(dataplane: DataPlane, name: str) -> None:
    if name != dataplane.model:
        raise ModelNotFound(name)


def _order(label: str) -> tuple[int, int, str]:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


async def index(dataplane: DataPlane, ready_only: bool) -> list[dict[str, str]]:
    """Triton's index entries: name, version, state and (when not ready) the reason."""
    # The store may be remote: listing it never runs on the event loop.
    stored = await asyncio.to_thread(artifacts.list_versions, dataplane.registry.store_uri, dataplane.model)
    loaded = set(dataplane.registry.versions)
    entries = []
    for label in sorted({str(v) for v in stored} | loaded, key=_order):
        if label in loaded:
            entries.append({"name": dataplane.model, "version": label, "state": READY})
        elif not ready_only:
            entries.append(
                {"name": dataplane.model, "version": label, "state": UNAVAILABLE, "reason": "not loaded"}
            )
    return entries


def _policy_version(config: Any) -> int | str:
    """The one version a Triton model config's `version_policy` names."""
    if isinstance(config, str | bytes):
        config = protocol.loads_any(config.encode() if isinstance(config, str) else config, "load: config")
    if not isinstance(config, dict):
        raise InvalidInput("load: 'config' must be a JSON object (a Triton model config)")
    unknown = set(config) - {"name", "version_policy"}
    if unknown:
        raise InvalidInput(f"load: config fields {sorted(unknown)} do not apply; only 'version_policy' does")
    policy = config.get("version_policy", {"latest": {"num_versions": 1}})
    if not isinstance(policy, dict) or len(policy) != 1:
        raise InvalidInput("load: 'version_policy' must hold one of 'latest' or 'specific'")
    (kind, spec), = policy.items()
    spec = spec if isinstance(spec, dict) else {}
    if kind == "latest" and spec.get("num_versions", 1) in (1, "1"):
        return "latest"
    if kind == "specific":
        versions = spec.get("versions")
        if isinstance(versions, list) and len(versions) == 1 and str(versions[0]).isdigit():
            return int(versions[0])
    raise InvalidInput("load: one version serves at a time; use 'latest' with num_versions 1, "
                       "or 'specific' with one version")


def _plain(key: str, value: Any) -> Any:
    # Bytes (gRPC's bytes_param) only ever carry model files, which are not taken here.
    if isinstance(value, bytes):
        raise InvalidInput(f"parameter '{key}' must be a string, number or boolean, not bytes")
    return value


def load_body(parameters: Mapping[str, Any]) -> bytes:
    """The POST /v2/admin/load body that load parameters stand for."""
    payload: dict[str, Any] = {}
    for key, value in parameters.items():
        if key.startswith("file:"):
            raise InvalidInput("load: model files cannot be sent; versions are read from the store")
        if key == "config":
            if "version" in parameters:
                raise InvalidInput("load: give 'version' or 'config', not both")
            payload["version"] = _policy_version(value)
        elif key in _LOAD_FIELDS:
            payload[key] = _plain(key, value)
        else:
            raise InvalidInput(f"load: unknown parameter '{key}'; known: config, {', '.join(sorted(_LOAD_FIELDS))}")
    if "members" not in payload:
        payload.setdefault("version", "latest")
    return orjson.dumps(payload)


async def load(dataplane: DataPlane, name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Load (or reload) the model: a hot swap; returns the routing state."""
    _check(dataplane, name)
    return await dataplane.load(load_body(parameters))


async def unload(dataplane: DataPlane, name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Unload the candidate version; returns the routing state."""
    _check(dataplane, name)
    unknown = set(parameters) - _UNLOAD_FIELDS
    if unknown:
        raise InvalidInput(f"unload: unknown parameters {sorted(unknown)}")
    routing = dataplane.routing
    if routing is None:
        raise NotReady("the server is still loading its first version")
    version = parameters.get("version")
    if version is not None:
        label = str(_plain("version", version))
        if label == routing.stable:
            raise Conflict(f"version '{label}' is the stable version; load another version to replace it")
        if label != routing.candidate:
            raise VersionNotFound(name, label)
    if routing.candidate is not None:
        return await dataplane.set_routing(b'{"candidate": null}')
    return dataplane.routing_state()


def rest_parameters(body: bytes, what: str) -> dict[str, Any]:
    """The `parameters` object of a REST repository body (an empty body has none)."""
    if not body.strip():
        return {}
    payload = protocol.loads_object(body, what)
    unknown = set(payload) - {"parameters"}
    if unknown:
        raise InvalidInput(f"{what}: unknown fields {sorted(unknown)}")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{what}: 'parameters' must be an object")
    return parameters


def rest_index_ready(body: bytes) -> bool:
    """The `ready` flag of a REST index body."""
    if not body.strip():
        return False
    payload = protocol.loads_object(body, "index")
    unknown = set(payload) - {"ready", "repository_name"}
    if unknown:
        raise InvalidInput(f"index: unknown fields {sorted(unknown)}")
    ready = payload.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput("index: 'ready' must be true or false")
    return ready
