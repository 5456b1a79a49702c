"""What every ModelDeployment's serving loop shares, and what a loop sees without asking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import aiohttp

from modelops.api.tenancy import TenancyPolicy
from modelops.k8s.controller.status import StatusWriter
from modelops.k8s.kube import Kube
from modelops.k8s.metrics import METRICS
from modelops.k8s.modeldeployment import builders, credentials, names

T = TypeVar("T")


@dataclass(frozen=True)
class Views:
    """What the loop sees of the cluster without asking (Kopf indexes, or anything alike)."""

    pods: Callable[[], Sequence[Mapping[str, Any]]]
    deployment: Callable[[], Mapping[str, Any] | None]
    jobs: Callable[[], Sequence[Mapping[str, Any]]]
    trained: Callable[[str], set[int]]


@dataclass
class Shared:
    """What every loop shares: the API client, a thread pool for it, an HTTP session."""

    kube: Kube
    settings: builders.ServingSettings
    executor: ThreadPoolExecutor
    session: aiohttp.ClientSession
    # What tenants may name (Prometheus URLs among them), from the operator's config.
    policy: TenancyPolicy = field(default_factory=TenancyPolicy)
    # Whether the metrics-endpoints annotation is honoured (OperatorConfig.endpoint_overrides).
    endpoint_overrides: bool = False
    # What each ModelDeployment's admin token is derived from (credentials.py).
    admin_key: bytes = field(default_factory=credentials.random_key, repr=False)
    status: StatusWriter = field(init=False)

    def __post_init__(self) -> None:
        self.status = StatusWriter(self.kube, METRICS, names.KIND)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(fn, *args))
