"""Helpers of the ModelDeployment cluster tests: a store, real servers, a load generator.

KWOK pods run no containers, so the inference servers are real `python -m
modelops_runtime serve` processes on loopback, and the ModelDeployment's
`modelops.dev/metrics-endpoints` annotation points the operator at them: it
scrapes their /metrics and drives their admin routing exactly as it would a pod's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
from kubernetes import client

from tests.cluster.operator_fixture import wait_for
from tests.runtime.serve_helpers import N_FEATURES, ServerProcess, infer_body, save_classifier

GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "modeldeployments"
MERGE = "application/merge-patch+json"
MODEL = "digits"


def make_store(root: Path, namespace: str | None = None) -> str:
    """Versions 1 and 2 predict alike (same weights); version 3 is a different network.

    With a namespace they go to its folder, where the operator looks for that namespace's
    versions (the default store layout); the store's root is returned either way."""
    store = f"file://{root}"
    folder = f"{store}/{namespace}" if namespace else store
    save_classifier(folder, MODEL, 1, seed=1)
    save_classifier(folder, MODEL, 2, seed=1)
    save_classifier(folder, MODEL, 3, seed=99)
    return store


@contextlib.contextmanager
def servers(
    store: str, count: int, log_dir: Path, version: int = 1
) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for i in range(count):
            args = [
                "--store",
                store,
                "--model",
                MODEL,
                "--version",
                str(version),
                "--drain-seconds",
                "2",
            ]
            started.append(ServerProcess(args, log_dir / f"server-{i}.log").__enter__())
        yield started
    finally:
        for server in started:
            server.stop()


def routing(server: ServerProcess) -> dict[str, Any]:
    state: dict[str, Any] = httpx.get(f"{server.url}/v2/admin/routing", timeout=5).json()
    return state


def truth(server: ServerProcess, rows: np.ndarray, version: int = 1) -> list[int]:
    """Version 1's answers: the labels the feedback calls correct."""
    url = f"{server.url}/v2/models/{MODEL}/versions/{version}/infer"
    labels: list[int] = []
    # A request holds at most maxBatchSize rows (the servers' default is 32).
    for start in range(0, len(rows), 16):
        reply = httpx.post(url, json=infer_body(rows[start : start + 16]), timeout=30).json()
        outputs = {o["name"]: o["data"] for o in reply["outputs"]}
        labels += [int(v) for v in outputs["predictions"]]
    return labels


class Load:
    """Open-loop requests at a settable rate, round-robin over servers, with feedback.

    Every answer is counted by status and by the version that gave it (header
    x-model-version); connection errors count as status 0.
    """

    def __init__(self, urls: list[str], rows: np.ndarray, labels: list[int] | None = None) -> None:
        self.urls = urls
        self.rows = rows
        self.labels = labels
        self.rate = 0.0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.versions: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def set_rate(self, rps: float) -> None:
        self.rate = rps

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(limit=128)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            targets = itertools.cycle(range(len(self.urls)))
            rows = itertools.cycle(range(len(self.rows)))
            next_at = time.monotonic()
            while not self._stop.is_set():
                if self.rate <= 0:
                    await asyncio.sleep(0.05)
                    next_at = time.monotonic()
                    continue
                next_at += 1.0 / self.rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._one(session, self.urls[next(targets)], next(rows)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, url: str, i: int) -> None:
        request_id = uuid.uuid4().hex
        body = infer_body(self.rows[i : i + 1], request_id)
        try:
            async with session.post(f"{url}/v2/models/{MODEL}/infer", json=body) as response:
                await response.read()
                status = response.status
                version = response.headers.get("x-model-version", "")
                feedback_id = response.headers.get("x-feedback-id", "")
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self.statuses[0] += 1
            self.errors.append(repr(error))
            return
        self.statuses[status] += 1
        self.versions[version] += 1
        if status == 200 and self.labels is not None:
            feedback = {"id": feedback_id, "labels": [self.labels[i]]}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.post(f"{url}/v2/models/{MODEL}/feedback", json=feedback) as r:
                    await r.read()


def input_rows(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, N_FEATURES), dtype=np.float32)


class Deployments:
    """API calls on ModelDeployments and their children, with the official client."""

    def __init__(self, k8s: Any, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(k8s)
        self.apps = client.AppsV1Api(k8s)
        self.core = client.CoreV1Api(k8s)
        self.batch = client.BatchV1Api(k8s)
        self.k8s = k8s
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return found

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, patch, _content_type=MERGE
        )

    def scale(self, name: str) -> dict[str, Any]:
        scale: dict[str, Any] = self.custom.get_namespaced_custom_object_scale(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return scale

    def set_scale(self, name: str, replicas: int) -> None:
        """What `kubectl scale` does: a patch of the scale subresource."""
        self.custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": {"replicas": replicas}},
            _content_type=MERGE,
        )  # fmt: skip

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(f"{name}-server", self.ns)

    def events(self, reason: str) -> list[Any]:
        items: list[Any] = self.core.list_namespaced_event(self.ns).items
        return [e for e in items if e.reason == reason]

    def wait(self, what: str, name: str, check: Any, timeout: float = 60.0) -> dict[str, Any]:
        def met() -> dict[str, Any] | None:
            status = self.status(name)
            # poll_until stops on anything but None/False, an empty dict included.
            return status if status and check(status) else None

        found: dict[str, Any] = wait_for(what, met, timeout=timeout)
        return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status.get("conditions", []) if c["type"] == kind)
    return found


def manifest(name: str, store: str, endpoints: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "annotations": {"modelops.dev/metrics-endpoints": ",".join(endpoints)},
        },
        "spec": {"model": {"name": MODEL, "version": "1", "storeUri": store}, **spec},
    }
