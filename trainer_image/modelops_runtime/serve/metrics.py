"""Prometheus metrics of the server, labelled by model and version only.

Counters and histograms change on the request path, so their label children are
resolved once per (version, code) and cached. Values that exist as live state —
queue depth, in-flight requests, rolling accuracy, shadow agreement, traffic
weights — are read at scrape time by a collector instead of being updated per
request. Each server owns its registry (plus the process and platform
collectors, which give CPU and memory on Linux), so nothing is set up at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class LiveState:
    """Values read at scrape time; keys are version labels."""

    queue_depth: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    mean_abs_error: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    traffic_percent: dict[str, float] = field(default_factory=dict)
    feedback_log_size: int = 0


class _LiveCollector(Collector):
    def __init__(self, model: str, read: Callable[[], LiveState]) -> None:
        self._model = model
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._read()
        model = self._model

        def per_version(name: str, doc: str, values: dict[str, float] | dict[str, int]) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["model", "version"])
            for version, value in sorted(values.items()):
                family.add_metric([model, version], float(value))
            return family

        yield per_version("modelops_queue_depth", "Requests waiting for a batch.", state.queue_depth)
        inflight = GaugeMetricFamily("modelops_inflight_requests", "Inference requests being handled.", labels=["model"])
        inflight.add_metric([model], state.in_flight)
        yield inflight
        yield per_version("modelops_rolling_accuracy", "Accuracy over the last feedback rows.", state.accuracy)
        yield per_version(
            "modelops_rolling_mean_absolute_error", "Mean absolute error over the last feedback rows.",
            state.mean_abs_error,
        )
        yield per_version(
            "modelops_shadow_agreement_ratio", "Fraction of mirrored rows where the candidate agreed.",
            state.agreement,
        )
        yield per_version("modelops_traffic_percent", "Percent of live traffic answered.", state.traffic_percent)
        log = GaugeMetricFamily("modelops_feedback_log_entries", "Recent predictions kept for feedback.", labels=["model"])
        log.add_metric([model], state.feedback_log_size)
        yield log


class ServeMetrics:
    """The server's metrics for one model."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "modelops_requests", "Inference requests answered, by status code.",
            ["model", "version", "code"], registry=r,
        )
        self.duration = Histogram(
            "modelops_request_duration_seconds", "Inference request latency inside the server.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "modelops_batch_size", "Rows per forward pass.", ["model", "version"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.rejected = Counter(
            "modelops_rejected_requests", "Requests refused because the queue was full.",
            ["model", "version"], registry=r,
        )
        self.predictions = Counter(
            "modelops_predictions", "Predicted rows per class (the served distribution, for drift).",
            ["model", "version", "class"], registry=r,
        )
        self.feedback = Counter(
            "modelops_feedback_rows", "Rows with ground-truth labels received.",
            ["model", "version"], registry=r,
        )
        self.shadow_compared = Counter(
            "modelops_shadow_compared_rows", "Rows answered by both stable and shadow versions.",
            ["model", "version"], registry=r,
        )
        self.shadow_agreed = Counter(
            "modelops_shadow_agreed_rows", "Mirrored rows where the shadow version agreed.",
            ["model", "version"], registry=r,
        )
        self.swaps = Counter(
            "modelops_routing_changes", "Routing changes (hot swaps, canary weights, shadow).",
            ["model"], registry=r,
        )
        self._request_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def attach_live(self, read: Callable[[], LiveState]) -> None:
        self.registry.register(_LiveCollector(self.model, read))

    def observe_request(self, version: str, code: int, seconds: float) -> None:
        key = (version, str(code))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(self.model, version, key[1])
        counter.inc()
        histogram = self._duration_children.get(version)
        if histogram is None:
            histogram = self._duration_children[version] = self.duration.labels(self.model, version)
        histogram.observe(seconds)

    def batch_observer(self, version: str, classes: list[str] | None) -> Callable[[np.ndarray], None]:
        """A callback for the forward thread: batch size and per-class prediction counts."""
        size = self.batch_size.labels(self.model, version)
        per_class = [self.predictions.labels(self.model, version, c) for c in classes] if classes else []

        def observe(predictions: np.ndarray) -> None:
            size.observe(len(predictions))
            if per_class:
                counts = np.bincount(predictions.reshape(-1), minlength=len(per_class))
                for child, count in zip(per_class, counts.tolist(), strict=False):
                    if count:
                        child.inc(count)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
