"""Reading the inference server's Prometheus exposition into load and gate metrics.

Pure: text in, numbers out. Counters are cumulative, so rates and the gate's
per-step figures come from the difference of two samples (`window`); p95 comes
from the latency histogram's bucket differences, as PromQL's histogram_quantile.
Each replica is compared with its own earlier sample and the increases are summed,
so replicas starting, stopping or restarting never look like traffic.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from modelops.lifecycle.rollout import VersionMetrics

# The series ModelOps reads from a server, by /metrics or through Prometheus.
REQUESTS = "modelops_requests_total"
DURATION_BUCKET = "modelops_request_duration_seconds_bucket"
FEEDBACK = "modelops_feedback_rows_total"
COMPARED = "modelops_shadow_compared_rows_total"
AGREED = "modelops_shadow_agreed_rows_total"
IN_FLIGHT = "modelops_inflight_requests"
QUEUE = "modelops_queue_depth"
ACCURACY = "modelops_rolling_accuracy"
AGREEMENT = "modelops_shadow_agreement_ratio"
CPU = "process_cpu_seconds_total"
WANTED = frozenset(
    {REQUESTS, DURATION_BUCKET, FEEDBACK, COMPARED, AGREED, IN_FLIGHT, QUEUE, ACCURACY}
    | {AGREEMENT, CPU}
)
# (series name, labels, value): one sample, however it was fetched.
Triple = tuple[str, Mapping[str, str], float]


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
    cpu_seen: bool = False  # whether the server reported its CPU at all

    def version(self, label: str) -> VersionCounters:
        return self.versions.setdefault(label, VersionCounters())


def exposition_samples(text: str) -> Iterator[Triple]:
    """The samples of the series ModelOps reads, from one /metrics body."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in WANTED:
                yield s.name, s.labels, s.value


def fold(samples: Iterable[Triple], time: float, model: str | None = None) -> ServerSample:
    """The one reading of the servers' series: counters per version, gauges, CPU.

    With `model`, series labelled with another model are left out. A NaN (a gauge with
    nothing to report yet) is no reading.
    """
    sample = ServerSample(time=time)
    for name, labels, value in samples:
        if math.isnan(value):
            continue
        if name == CPU:
            sample.cpu_seconds += value
            sample.cpu_seen = True
            continue
        if model is not None and labels.get("model", model) != model:
            continue
        version = labels.get("version", "")
        if name == REQUESTS:
            counters = sample.version(version)
            counters.requests += value
            if labels.get("code", "").startswith("5"):
                counters.errors += value
        elif name == DURATION_BUCKET:
            le = float(labels.get("le", "+Inf"))
            buckets = sample.version(version).buckets
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == FEEDBACK:
            sample.version(version).feedback_rows += value
        elif name == COMPARED:
            sample.version(version).shadow_compared += value
        elif name == AGREED:
            sample.version(version).shadow_agreed += value
        elif name == IN_FLIGHT:
            sample.in_flight += value
        elif name == QUEUE:
            sample.queued += value
        elif name == ACCURACY:
            sample.accuracy[version] = value
        elif name == AGREEMENT:
            sample.agreement[version] = value
    return sample


def parse_exposition(text: str, time: float) -> ServerSample:
    """The counters and gauges ModelOps reads, from one /metrics body."""
    return fold(exposition_samples(text), time)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """histogram_quantile over cumulative buckets (PromQL's, linear inside a bucket);
    None without observations."""
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
    return after - before if after >= before else after  # a restart counts from zero


def counts_between(before: ServerSample | None, after: ServerSample) -> Counts:
    """What one replica did between two of its samples (all of it, for a new replica)."""
    before = before or ServerSample(time=after.time)
    counts = Counts(seconds=max(after.time - before.time, 0.0))
    counts.cpu_seconds = _diff(after.cpu_seconds, before.cpu_seconds)
    for label, now in after.versions.items():
        then = before.versions.get(label, VersionCounters())
        counts.versions[label] = VersionCounters(
            requests=_diff(now.requests, then.requests),
            errors=_diff(now.errors, then.errors),
            buckets={le: _diff(c, then.buckets.get(le, 0.0)) for le, c in now.buckets.items()},
            feedback_rows=_diff(now.feedback_rows, then.feedback_rows),
            shadow_compared=_diff(now.shadow_compared, then.shadow_compared),
            shadow_agreed=_diff(now.shadow_agreed, then.shadow_agreed),
        )
    return counts


@dataclass
class Counts:
    """Counter increases over an interval, for one replica or summed over several."""

    seconds: float = 0.0
    versions: dict[str, VersionCounters] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def add(self, other: Counts) -> None:
        self.seconds = max(self.seconds, other.seconds)
        self.cpu_seconds += other.cpu_seconds
        for label, counters in other.versions.items():
            self.versions.setdefault(label, VersionCounters()).add(counters)


@dataclass(frozen=True)
class Gauges:
    """Point-in-time values over the replicas: sums of load, means of quality."""

    in_flight: float = 0.0
    queued: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)


def gauges(samples: list[ServerSample]) -> Gauges:
    accuracy: dict[str, list[float]] = defaultdict(list)
    agreement: dict[str, list[float]] = defaultdict(list)
    for sample in samples:
        for label, value in sample.accuracy.items():
            accuracy[label].append(value)
        for label, value in sample.agreement.items():
            agreement[label].append(value)
    return Gauges(
        in_flight=sum(s.in_flight for s in samples),
        queued=sum(s.queued for s in samples),
        accuracy={k: sum(v) / len(v) for k, v in accuracy.items()},
        agreement={k: sum(v) / len(v) for k, v in agreement.items()},
    )


@dataclass(frozen=True)
class Window:
    """Rates and gate metrics over an interval, summed over replicas."""

    seconds: float
    rps: float
    error_rate: float
    p95_ms: float | None
    per_version: dict[str, VersionMetrics]
    cpu_cores: float


def summarize(counts: Counts, current: Gauges) -> Window:
    """Rates from counter increases; accuracy and agreement from the current gauges."""
    seconds = max(counts.seconds, 1e-9)
    per_version: dict[str, VersionMetrics] = {}
    all_buckets: dict[float, float] = {}
    total_requests = total_errors = 0.0
    for label, c in counts.versions.items():
        for le, count in c.buckets.items():
            all_buckets[le] = all_buckets.get(le, 0.0) + count
        p95 = quantile(0.95, c.buckets)
        per_version[label] = VersionMetrics(
            requests=int(c.requests),
            errors=int(c.errors),
            p95_ms=None if p95 is None else p95 * 1000,
            accuracy=current.accuracy.get(label),
            feedback_rows=int(c.feedback_rows),
            compared=int(c.shadow_compared),
            agreement=(
                c.shadow_agreed / c.shadow_compared
                if c.shadow_compared
                else current.agreement.get(label)
            ),
        )
        total_requests += c.requests
        total_errors += c.errors
    p95_all = quantile(0.95, all_buckets)
    return Window(
        seconds=seconds,
        rps=total_requests / seconds,
        error_rate=total_errors / total_requests if total_requests else 0.0,
        p95_ms=None if p95_all is None else p95_all * 1000,
        per_version=per_version,
        cpu_cores=counts.cpu_seconds / seconds,
    )


def window(before: dict[str, ServerSample], after: dict[str, ServerSample]) -> Window:
    """The window between two scrapes of a set of replicas, keyed by replica.

    Each replica is compared with its own earlier sample, so replicas coming and
    going never show up as a burst or a drop of traffic.
    """
    total = Counts()
    for replica, sample in after.items():
        total.add(counts_between(before.get(replica), sample))
    return summarize(total, gauges(list(after.values())))
