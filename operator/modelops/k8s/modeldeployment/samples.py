"""The servers' metrics as numbers the loop can use: per-version counters, windows, rates.

Each server exposes cumulative counters (requests by version and code, a latency
histogram, feedback rows, shadow comparisons) and gauges (queue depth, requests
in flight, rolling accuracy). Endpoints come and go as replicas do and a restarted
server starts its counters from zero, so summing raw counters over endpoints would
jump. `Totals` instead accumulates, per endpoint, only the *increase* since that
endpoint's previous reading (a decrease means a restart: the new value is the
increase); an endpoint's first reading is its baseline. Totals therefore only grow,
and any window is a subtraction of two of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelops.lifecycle import servermetrics

# Prometheus is asked for the series a reading uses (see metrics_source.promql).
WANTED = servermetrics.WANTED - {servermetrics.AGREEMENT}


@dataclass(frozen=True)
class Counters:
    """Cumulative counts of one version (or a difference of two such)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count)
    feedback_rows: float = 0.0
    compared: float = 0.0
    agreed: float = 0.0

    def _fields(self) -> tuple[float, ...]:
        return (self.requests, self.errors, self.feedback_rows, self.compared, self.agreed)

    def _combine(self, other: Counters, sign: float) -> Counters:
        a, b = self._fields(), other._fields()
        return Counters(
            requests=a[0] + sign * b[0],
            errors=a[1] + sign * b[1],
            buckets=_merge(self.buckets, other.buckets, sign),
            feedback_rows=a[2] + sign * b[2],
            compared=a[3] + sign * b[3],
            agreed=a[4] + sign * b[4],
        )

    def __add__(self, other: Counters) -> Counters:
        return self._combine(other, 1.0)

    def __sub__(self, other: Counters) -> Counters:
        return self._combine(other, -1.0)

    def decreased_from(self, before: Counters) -> bool:
        """True when any counter went down: the server restarted in between."""
        if any(a < b for a, b in zip(self._fields(), before._fields(), strict=True)):
            return True
        old = dict(before.buckets)
        return any(count < old.get(le, 0.0) for le, count in self.buckets)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared > 0 else None

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear inside the bucket, in seconds."""
        return histogram_quantile(self.buckets, q)


def _merge(
    a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...], sign: float
) -> tuple[tuple[float, float], ...]:
    out = dict(a)
    for le, count in b:
        out[le] = out.get(le, 0.0) + sign * count
    return tuple(sorted(out.items()))


def histogram_quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    return servermetrics.quantile(q, dict(buckets))


@dataclass(frozen=True)
class Reading:
    """One endpoint's metrics at one moment."""

    versions: dict[str, Counters]
    queue_depth: float = 0.0
    in_flight: float = 0.0
    cpu_seconds: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)


def reading_from_samples(
    samples: Iterable[tuple[str, Mapping[str, str], float]], model: str
) -> Reading:
    """A Reading from (sample name, labels, value) triples of one endpoint."""
    folded = servermetrics.fold(samples, 0.0, model)
    versions = {
        version: Counters(
            requests=c.requests,
            errors=c.errors,
            buckets=tuple(sorted(c.buckets.items())),
            feedback_rows=c.feedback_rows,
            compared=c.shadow_compared,
            agreed=c.shadow_agreed,
        )
        for version, c in folded.versions.items()
        if version
    }
    cpu = folded.cpu_seconds if folded.cpu_seen else None
    return Reading(versions, folded.queued, folded.in_flight, cpu, dict(folded.accuracy))


def parse_exposition(text: str, model: str) -> Reading:
    """A Reading from a server's /metrics text."""
    return reading_from_samples(servermetrics.exposition_samples(text), model)


@dataclass(frozen=True)
class Snapshot:
    """The accumulated totals at one time."""

    time: float
    versions: dict[str, Counters]
    cpu_seconds: float

    def since(self, earlier: Snapshot, version: str | None = None) -> Counters:
        """Counts between two snapshots, for one version or all of them."""
        labels = [version] if version is not None else list(self.versions)
        out = Counters()
        for label in labels:
            out = out + (
                self.versions.get(label, Counters()) - earlier.versions.get(label, Counters())
            )
        return out


class Totals:
    """Monotonic per-version totals over a changing set of endpoints, with a short history."""

    def __init__(self, keep_seconds: float = 120.0) -> None:
        self._last: dict[str, Reading] = {}
        self._versions: dict[str, Counters] = {}
        self._cpu = 0.0
        self._keep = keep_seconds
        self.history: deque[Snapshot] = deque()
        self.gauges = Reading({})
        self.endpoints = 0

    def add(self, now: float, readings: Mapping[str, Reading]) -> Snapshot:
        """Fold one round of readings (endpoint → Reading) into the totals."""
        for endpoint, reading in readings.items():
            before = self._last.get(endpoint)
            if before is not None:
                self._fold(before, reading)
            self._last[endpoint] = reading
        for gone in set(self._last) - set(readings):
            del self._last[gone]
        self.endpoints = len(readings)
        self.gauges = _sum_gauges(readings.values())
        snapshot = Snapshot(now, dict(self._versions), self._cpu)
        self.history.append(snapshot)
        while self.history and self.history[0].time < now - self._keep:
            self.history.popleft()
        return snapshot

    def _fold(self, before: Reading, now: Reading) -> None:
        for version, counters in now.versions.items():
            previous = before.versions.get(version, Counters())
            increase = counters if counters.decreased_from(previous) else counters - previous
            self._versions[version] = self._versions.get(version, Counters()) + increase
        if now.cpu_seconds is not None and before.cpu_seconds is not None:
            restarted = now.cpu_seconds < before.cpu_seconds
            self._cpu += now.cpu_seconds if restarted else now.cpu_seconds - before.cpu_seconds

    def latest(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    def at_or_before(self, time: float) -> Snapshot | None:
        """The newest snapshot not after `time`, else the oldest kept."""
        chosen = None
        for snapshot in self.history:
            if snapshot.time <= time:
                chosen = snapshot
            else:
                break
        return chosen or (self.history[0] if self.history else None)

    def previous(self) -> Snapshot | None:
        return self.history[-2] if len(self.history) >= 2 else None


def _sum_gauges(readings: Iterable[Reading]) -> Reading:
    queue = in_flight = 0.0
    accuracy: dict[str, list[float]] = {}
    for reading in readings:
        queue += reading.queue_depth
        in_flight += reading.in_flight
        for version, value in reading.accuracy.items():
            accuracy.setdefault(version, []).append(value)
    mean = {v: sum(values) / len(values) for v, values in accuracy.items()}
    return Reading({}, queue, in_flight, None, mean)
