"""Reading the inference server's Prometheus exposition into load and gate metrics.

Pure: text in, numbers out. Counters are cumulative, so rates and the gate's
per-step figures come from the difference of two samples (`window`); p95 comes
from the latency histogram's bucket differences, as PromQL's histogram_quantile.
Replicas are summed sample by sample, so a replica that restarts (counters back to
zero) only loses its own window.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from modelops.lifecycle.rollout import VersionMetrics


@dataclass
class VersionCounters:
    """Cumulative counters of one version in one replica (or summed over replicas)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    feedback_rows: float = 0.0
    shadow_compared: float = 0.0
    shadow_agreed: float = 0.0

    def add(self, other: VersionCounters) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.feedback_rows += other.feedback_rows
        self.shadow_compared += other.shadow_compared
        self.shadow_agreed += other.shadow_agreed
        for le, count in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + count


@dataclass
class ServerSample:
    """One scrape of one replica, or several replicas summed."""

    time: float
    versions: dict[str, VersionCounters] = field(default_factory=dict)
    in_flight: float = 0.0
    queued: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def version(self, label: str) -> VersionCounters:
        return self.versions.setdefault(label, VersionCounters())


def parse_exposition(text: str, time: float) -> ServerSample:
    """The counters and gauges ModelOps reads, from one /metrics body."""
    sample = ServerSample(time=time)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            version = s.labels.get("version", "")
            if s.name == "modelops_requests_total":
                counters = sample.version(version)
                counters.requests += s.value
                if s.labels.get("code", "").startswith("5"):
                    counters.errors += s.value
            elif s.name == "modelops_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                buckets = sample.version(version).buckets
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name == "modelops_feedback_rows_total":
                sample.version(version).feedback_rows += s.value
            elif s.name == "modelops_shadow_compared_rows_total":
                sample.version(version).shadow_compared += s.value
            elif s.name == "modelops_shadow_agreed_rows_total":
                sample.version(version).shadow_agreed += s.value
            elif s.name == "modelops_inflight_requests":
                sample.in_flight += s.value
            elif s.name == "modelops_queue_depth":
                sample.queued += s.value
            elif s.name == "modelops_rolling_accuracy":
                sample.accuracy[version] = s.value
            elif s.name == "modelops_shadow_agreement_ratio":
                sample.agreement[version] = s.value
            elif s.name == "process_cpu_seconds_total":
                sample.cpu_seconds += s.value
    return sample


def combine(samples: list[ServerSample], time: float) -> ServerSample:
    """Replicas summed; accuracy and agreement averaged over the replicas reporting them."""
    total = ServerSample(time=time)
    accuracy: dict[str, list[float]] = defaultdict(list)
    agreement: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        total.in_flight += sample.in_flight
        total.queued += sample.queued
        total.cpu_seconds += sample.cpu_seconds
        for label, counters in sample.versions.items():
            total.version(label).add(counters)
        for label, value in sample.accuracy.items():
            accuracy[label].append(value)
        for label, value in sample.agreement.items():
            agreement[label].append(value)
    total.accuracy = {k: sum(v) / len(v) for k, v in accuracy.items() if v}
    total.agreement = {k: sum(v) / len(v) for k, v in agreement.items() if v}
    return total


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative buckets; None without observations."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            span = count - lower_count
            fraction = (rank - lower_count) / span if span > 0 else 1.0
            return lower_le + (le - lower_le) * fraction
        lower_le, lower_count = le, count
    return lower_le


def _diff(after: float, before: float) -> float:
    return after - before if after >= before else after  # a reset counts from zero


@dataclass(frozen=True)
class Window:
    """What happened between two samples."""

    seconds: float
    rps: float
    error_rate: float
    p95_ms: float | None
    per_version: dict[str, VersionMetrics]
    cpu_cores: float


def window(before: ServerSample, after: ServerSample) -> Window:
    """Rates and gate metrics over the interval between two samples."""
    seconds = max(after.time - before.time, 1e-9)
    per_version: dict[str, VersionMetrics] = {}
    all_buckets: dict[float, float] = {}
    total_requests = total_errors = 0.0
    for label, now in after.versions.items():
        then = before.versions.get(label, VersionCounters())
        requests = _diff(now.requests, then.requests)
        errors = _diff(now.errors, then.errors)
        buckets = {le: _diff(c, then.buckets.get(le, 0.0)) for le, c in now.buckets.items()}
        for le, count in buckets.items():
            all_buckets[le] = all_buckets.get(le, 0.0) + count
        compared = _diff(now.shadow_compared, then.shadow_compared)
        agreed = _diff(now.shadow_agreed, then.shadow_agreed)
        p95 = quantile(0.95, buckets)
        per_version[label] = VersionMetrics(
            requests=int(requests),
            errors=int(errors),
            p95_ms=None if p95 is None else p95 * 1000,
            accuracy=after.accuracy.get(label),
            feedback_rows=int(_diff(now.feedback_rows, then.feedback_rows)),
            compared=int(compared),
            agreement=agreed / compared if compared else after.agreement.get(label),
        )
        total_requests += requests
        total_errors += errors
    p95_all = quantile(0.95, all_buckets)
    return Window(
        seconds=seconds,
        rps=total_requests / seconds,
        error_rate=total_errors / total_requests if total_requests else 0.0,
        p95_ms=None if p95_all is None else p95_all * 1000,
        per_version=per_version,
        cpu_cores=_diff(after.cpu_seconds, before.cpu_seconds) / seconds,
    )
