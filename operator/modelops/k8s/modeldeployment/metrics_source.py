"""Where the loop reads the servers' metrics, and where it reaches their admin endpoint.

Two sources, one result (endpoint → Reading, see samples.py):

- **scrape** (default): GET `http://<pod IP>:<podMetricsPort>/metrics` of every
  running server pod, concurrently, with a short timeout;
- **Prometheus** (`spec.autoscaling.metricsSource.prometheusUrl`): one instant
  query for the servers' series, grouped by their `instance` label. Prometheus
  does the scraping; the totals and windows are computed here the same way.

Pod IPs are not always reachable from the operator (the KWOK nodes of the test
control plane run no containers, and an operator outside the cluster cannot
route to pods). The annotation `modelops.dev/metrics-endpoints` on the
ModelDeployment then says where the servers are:

- `"127.0.0.1:8001,127.0.0.1:8002"`: exactly these servers, whatever pods exist;
- `'{"digits-server-5d9c-abcde": "10.0.0.7:8080"}'`: per pod, by pod name; pods
  not named use their IP.

The same addresses serve the admin routing calls of the rollout. The controller
passes the annotation here only when the operator was started with
MODELOPS_ENDPOINT_OVERRIDES (never from the chart): from a tenant it would aim the
operator's requests anywhere. Answers are read with a ceiling (controller.bounded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelops.k8s.controller import bounded
from modelops.k8s.modeldeployment.samples import (
    WANTED,
    Reading,
    parse_exposition,
    reading_from_samples,
)

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
QUERY_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


@dataclass(frozen=True)
class Endpoint:
    """A server: its pod (or its address when pods are not known) and host:port."""

    name: str
    address: str

    @property
    def url(self) -> str:
        return f"http://{self.address}"


class EndpointsError(ValueError):
    """The endpoints annotation cannot be read."""


def parse_override(value: str) -> list[str] | dict[str, str]:
    """The annotation's list (static servers) or mapping (pod name → address)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise EndpointsError(f"not JSON: {error}") from error
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise EndpointsError("expected a JSON object of pod name → host:port")
        return {k: _address(v) for k, v in raw.items()}
    return [_address(part) for part in text.split(",") if part.strip()]


def _address(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointsError(f"{text.strip()!r} is not host:port")
    return f"{host}:{port}"


def _serving(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    deleting = (pod.get("metadata") or {}).get("deletionTimestamp") is not None
    return status.get("phase") == "Running" and not deleting


def discover(pods: Iterable[Mapping[str, Any]], port: int, override: str | None) -> list[Endpoint]:
    """The servers to read: running pods at their IP, unless the annotation says otherwise."""
    # An empty annotation is an empty list: no server to read (not "use the pods").
    parsed = parse_override(override) if override is not None else None
    if isinstance(parsed, list):
        return [Endpoint(address, address) for address in parsed]
    mapping = parsed or {}
    out = []
    for pod in pods:
        if not _serving(pod):
            continue
        name = str(pod["metadata"]["name"])
        address = mapping.get(name)
        if address is None:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                continue
            address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        out.append(Endpoint(name, address))
    return sorted(out, key=lambda e: e.name)


async def scrape(
    session: aiohttp.ClientSession, endpoints: Sequence[Endpoint], model: str
) -> dict[str, Reading]:
    """Read every endpoint's /metrics; unreachable ones are left out (and logged)."""

    async def one(endpoint: Endpoint) -> tuple[str, Reading | None]:
        try:
            async with session.get(f"{endpoint.url}/metrics", timeout=SCRAPE_TIMEOUT) as response:
                if response.status != 200:
                    log.debug("scrape %s: HTTP %s", endpoint.address, response.status)
                    return endpoint.name, None
                text = await bounded.read_text(response, bounded.METRICS_LIMIT)
        except (aiohttp.ClientError, TimeoutError, OSError, bounded.TooLarge) as error:
            log.debug("scrape %s: %s", endpoint.address, error)
            return endpoint.name, None
        return endpoint.name, parse_exposition(text, model)

    results = await asyncio.gather(*(one(e) for e in endpoints))
    return {name: reading for name, reading in results if reading is not None}


def promql(model: str, selector: str, namespace: str) -> tuple[str, str]:
    """(the servers' series, their CPU) as instant queries, in `namespace` only.

    The namespace matcher is always added: Prometheus ANDs every matcher, so a tenant's
    `namespace="victim"` (or `namespace=~".*"`) selects nothing outside its own namespace.
    """
    own = f'namespace="{namespace}"'
    extra = f",{selector}" if selector else ""
    names = "|".join(sorted(n for n in WANTED if n.startswith("modelops_")))
    series = f'{{__name__=~"{names}",model="{model}",{own}{extra}}}'
    cpu = (
        f"process_cpu_seconds_total{{{own}{extra}}} and on(instance) "
        f'modelops_inflight_requests{{model="{model}",{own}{extra}}}'
    )
    return series, cpu


async def query_prometheus(
    session: aiohttp.ClientSession, url: str, model: str, selector: str, namespace: str
) -> dict[str, Reading]:
    """Instant values of the servers' series in `namespace`, one Reading per `instance`."""
    by_instance: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for query in promql(model, selector, namespace):
        for item in await _instant(session, url, query):
            labels: dict[str, str] = dict(item["metric"])
            name = labels.pop("__name__", "process_cpu_seconds_total")
            value = float(item["value"][1])
            if math.isnan(value):
                continue
            by_instance.setdefault(labels.get("instance", ""), []).append((name, labels, value))
    return {
        instance: reading_from_samples(samples, model) for instance, samples in by_instance.items()
    }


class PrometheusError(RuntimeError):
    pass


async def _instant(session: aiohttp.ClientSession, url: str, query: str) -> list[dict[str, Any]]:
    endpoint = f"{url.rstrip('/')}/api/v1/query"
    async with session.get(endpoint, params={"query": query}, timeout=QUERY_TIMEOUT) as response:
        payload = await bounded.read_json(response, bounded.QUERY_LIMIT)
    if not isinstance(payload, dict):
        raise PrometheusError(f"{query}: not a Prometheus answer")
    if payload.get("status") != "success":
        raise PrometheusError(f"{query}: {payload.get('error', payload)}")
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result
