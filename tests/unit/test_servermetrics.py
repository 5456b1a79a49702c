"""Reading the server's /metrics into load and gate figures."""

from __future__ import annotations

import pytest

from modelops.lifecycle.servermetrics import parse_exposition, quantile, window


def exposition(
    requests: dict[tuple[str, str], float],
    buckets: dict[str, list[float]] | None = None,
    inflight: float = 0,
) -> str:
    lines = ["# TYPE modelops_requests counter"]
    for (version, code), count in requests.items():
        lines.append(
            f'modelops_requests_total{{model="m",version="{version}",code="{code}"}} {count}'
        )
    lines.append("# TYPE modelops_request_duration_seconds histogram")
    for version, counts in (buckets or {}).items():
        for le, count in zip(("0.01", "0.1", "1.0", "+Inf"), counts, strict=True):
            lines.append(
                f'modelops_request_duration_seconds_bucket{{model="m",version="{version}",le="{le}"}} {count}'
            )
    lines.append("# TYPE modelops_inflight_requests gauge")
    lines.append(f'modelops_inflight_requests{{model="m"}} {inflight}')
    lines.append("# TYPE modelops_rolling_accuracy gauge")
    lines.append('modelops_rolling_accuracy{model="m",version="1"} 0.9')
    return "\n".join(lines) + "\n"


def test_rates_errors_and_p95_over_a_window() -> None:
    before = {"a": parse_exposition(exposition({("1", "200"): 100}, {"1": [0, 0, 0, 0]}), 0.0)}
    after = {
        "a": parse_exposition(
            exposition({("1", "200"): 290, ("1", "503"): 10}, {"1": [100, 190, 200, 200]}, 3),
            10.0,
        )
    }
    win = window(before, after)
    assert win.rps == pytest.approx(20.0)
    assert win.error_rate == pytest.approx(10 / 200)
    version = win.per_version["1"]
    assert version.requests == 200 and version.errors == 10
    # 95% of 200 = 190 lies at the 0.1 bucket's upper edge.
    assert version.p95_ms == pytest.approx(100.0)
    assert version.accuracy == pytest.approx(0.9)


def test_replicas_joining_or_leaving_are_not_traffic() -> None:
    """A replica that goes away (or appears with old counters) must not look like load."""
    a0 = parse_exposition(exposition({("1", "200"): 1000}), 0.0)
    b0 = parse_exposition(exposition({("1", "200"): 5000}), 0.0)
    a1 = parse_exposition(exposition({("1", "200"): 1010}), 10.0)
    assert window({"a": a0, "b": b0}, {"a": a1}).rps == pytest.approx(1.0)
    # A new replica counts only what it served since it started (all of it, here 20).
    c1 = parse_exposition(exposition({("1", "200"): 20}), 10.0)
    assert window({"a": a0}, {"a": a1, "c": c1}).rps == pytest.approx(3.0)


def test_a_restarted_replica_counts_from_zero() -> None:
    before = {"a": parse_exposition(exposition({("1", "200"): 500}), 0.0)}
    after = {"a": parse_exposition(exposition({("1", "200"): 30}), 10.0)}
    assert window(before, after).rps == pytest.approx(3.0)


def test_quantile_interpolates_and_handles_empty() -> None:
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}) == pytest.approx(0.1)
    assert quantile(0.75, {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}) == pytest.approx(0.15)
