"""The operator's own metrics, served on /metrics by prometheus-client.

Per resource and handler: reconcile counts by result, durations, errors by kind; the
reconciles waiting for a worker thread (the queue) and those running (in flight); the
objects under management; the trials of each TrainingJob's search by state. The process
collector of the default registry adds the operator's CPU time and resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from modelops.api.training_status import TrialCounts

P = ParamSpec("P")
T = TypeVar("T")

# Reconciles are API round trips: milliseconds to tens of seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OperatorMetrics:
    """One set of operator metrics in one registry (tests make their own registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.reconciles = Counter(
            "modelops_reconcile_total",
            "Reconciles run, by resource, handler and result (success, error).",
            ["resource", "handler", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "modelops_reconcile_duration_seconds",
            "Time one reconcile took.",
            ["resource", "handler"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "modelops_reconcile_errors_total",
            "Reconciles that raised, by error class.",
            ["resource", "handler", "error"],
            registry=registry,
        )
        self.queued = Gauge(
            "modelops_reconcile_queue",
            "Reconciles requested and waiting for a worker thread.",
            ["resource"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "modelops_reconcile_in_flight",
            "Reconciles running now.",
            ["resource"],
            registry=registry,
        )
        self.managed = Gauge(
            "modelops_managed_objects",
            "Objects with a running control loop.",
            ["resource"],
            registry=registry,
        )
        self.api_requests = Histogram(
            "modelops_api_request_duration_seconds",
            "Requests to the API server by verb, resource and status code, and their latency.",
            ["verb", "resource", "code"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.trials = Gauge(
            "modelops_trainingjob_trials",
            "Trials of a TrainingJob's search by state: running, stoppedEarly, finished, failed.",
            ["namespace", "trainingjob", "state"],
            registry=registry,
        )
        self.api_writes = Counter(
            "modelops_api_writes_total",
            "Writes sent to the API server, by verb and kind.",
            ["verb", "kind"],
            registry=registry,
        )

    def observe_trials(self, namespace: str, name: str, counts: TrialCounts | None) -> None:
        """A TrainingJob's search trials by state; None removes the job's series."""
        for state, value in (counts or TrialCounts()).to_dict().items():
            if counts is None:
                with contextlib.suppress(KeyError):
                    self.trials.remove(namespace, name, state)
            else:
                self.trials.labels(namespace, name, state).set(value)

    def observe_request(self, verb: str, resource: str, seconds: float, status: int) -> None:
        """A `kube.Observer`: one API request and how long it took."""
        self.api_requests.labels(verb, resource, str(status)).observe(seconds)

    @contextmanager
    def reconcile(self, resource: str, handler: str) -> Iterator[None]:
        """Count and time one reconcile; an exception counts as an error and propagates."""
        self.in_flight.labels(resource).inc()
        started = time.perf_counter()
        try:
            yield
        except Exception as error:
            self.reconciles.labels(resource, handler, "error").inc()
            self.errors.labels(resource, handler, type(error).__name__).inc()
            raise
        else:
            self.reconciles.labels(resource, handler, "success").inc()
        finally:
            self.duration.labels(resource, handler).observe(time.perf_counter() - started)
            self.in_flight.labels(resource).dec()

    @contextmanager
    def waiting(self, resource: str) -> Iterator[None]:
        """Mark a reconcile as queued until it starts."""
        self.queued.labels(resource).inc()
        try:
            yield
        finally:
            self.queued.labels(resource).dec()

    def instrument(
        self, resource: str, handler: str
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate an async Kopf handler; Kopf still sees its keyword arguments."""

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError("instrument() wraps async handlers; run sync work in a thread")

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                with self.reconcile(resource, handler):
                    return await fn(*args, **kwargs)

            return wrapper

        return decorate

    def instrument_sync(
        self, resource: str, handler: str
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a sync Kopf handler (Kopf runs those in its thread pool)."""

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                with self.reconcile(resource, handler):
                    return fn(*args, **kwargs)

            return wrapper

        return decorate


METRICS = OperatorMetrics()


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Start the /metrics endpoint in a background thread; returns the server."""
    server, _thread = start_http_server(port, addr=addr)
    return server
