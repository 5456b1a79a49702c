"""The serving loop's pure parts: metrics totals, endpoint discovery, status and conditions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelops.api.deployment import (
    LiveMetrics,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    RolloutSpec,
)
from modelops.k8s.modeldeployment import status as report
from modelops.k8s.modeldeployment.autoscaler import Autoscaler
from modelops.k8s.modeldeployment.metrics_source import EndpointsError, discover, promql
from modelops.k8s.modeldeployment.samples import (
    Counters,
    Totals,
    histogram_quantile,
    parse_exposition,
)
from modelops.lifecycle.rollout import GateInput, RolloutState, VersionMetrics, plan_rollout

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Server:
    """A registry with the server's metric names, to produce real exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelops_requests", "", ["model", "version", "code"], registry=r)
        self.duration = Histogram(
            "modelops_request_duration_seconds", "", ["model", "version"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5),
        )  # fmt: skip
        self.feedback = Counter("modelops_feedback_rows", "", ["model", "version"], registry=r)
        self.queue = Gauge("modelops_queue_depth", "", ["model", "version"], registry=r)
        self.accuracy = Gauge("modelops_rolling_accuracy", "", ["model", "version"], registry=r)

    def serve(self, version: str, code: int, seconds: float, n: int = 1) -> None:
        for _ in range(n):
            self.requests.labels("digits", version, str(code)).inc()
            self.duration.labels("digits", version).observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_exposition_is_read_per_version() -> None:
    server = Server()
    server.serve("1", 200, 0.02, n=8)
    server.serve("1", 503, 0.02, n=2)
    server.serve("2", 200, 0.2, n=5)
    server.queue.labels("digits", "1").set(3)
    server.accuracy.labels("digits", "2").set(0.75)
    server.requests.labels("other-model", "1", "200").inc(100)
    reading = parse_exposition(server.text(), "digits")
    assert reading.versions["1"].requests == 10
    assert reading.versions["1"].errors == 2
    assert reading.versions["2"].requests == 5
    assert reading.queue_depth == 3
    assert reading.accuracy == {"2": 0.75}
    p95 = reading.versions["2"].quantile(0.95)
    assert p95 is not None and 0.1 < p95 <= 0.5


def test_totals_only_grow_across_restarts_and_new_endpoints() -> None:
    totals = Totals()
    a, b = Server(), Server()
    a.serve("1", 200, 0.01, n=10)
    totals.add(0.0, {"a": parse_exposition(a.text(), "digits")})
    a.serve("1", 200, 0.01, n=5)
    b.serve("1", 200, 0.01, n=7)  # b's first reading is its baseline
    totals.add(
        1.0, {"a": parse_exposition(a.text(), "digits"), "b": parse_exposition(b.text(), "digits")}
    )
    restarted = Server()
    restarted.serve("1", 200, 0.01, n=2)  # a restarted: counters from zero
    b.serve("1", 200, 0.01, n=1)
    latest = totals.add(
        2.0,
        {
            "a": parse_exposition(restarted.text(), "digits"),
            "b": parse_exposition(b.text(), "digits"),
        },
    )
    assert [s.versions.get("1", Counters()).requests for s in totals.history] == [0, 5, 8]
    previous = totals.previous()
    assert previous is not None and latest.since(previous).requests == 3


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.75) == pytest.approx(0.15)
    assert histogram_quantile([], 0.5) is None


def pod(name: str, ip: str | None, phase: str = "Running") -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"phase": phase, "podIP": ip}}


def test_discovery_uses_pod_ips_or_the_annotation() -> None:
    pods = [
        pod("b", "10.0.0.2"),
        pod("a", "10.0.0.1"),
        pod("c", None),
        pod("d", "10.0.0.4", "Pending"),
    ]
    assert [e.address for e in discover(pods, 8080, None)] == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert discover(pods, 8080, "") == []  # an empty annotation: no server, not the pods
    static = discover(pods, 8080, "127.0.0.1:9001, 127.0.0.1:9002")
    assert [e.address for e in static] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    mapped = discover(pods, 8080, '{"a": "127.0.0.1:7000"}')
    assert [e.address for e in mapped] == ["127.0.0.1:7000", "10.0.0.2:8080"]
    with pytest.raises(EndpointsError):
        discover(pods, 8080, "nonsense")


def test_prometheus_queries_select_the_model_and_the_namespace() -> None:
    series, cpu = promql("digits", 'job="serving"', "ml")
    assert 'model="digits",namespace="ml",job="serving"' in series
    assert "modelops_requests_total" in series
    assert cpu.startswith('process_cpu_seconds_total{namespace="ml",job="serving"} and on(instance)')


@pytest.mark.parametrize(
    "selector", ['namespace="victim"', 'namespace=~".*"', 'namespace!="ml"', ""]
)
def test_a_prometheus_selector_cannot_leave_the_namespace(selector: str) -> None:
    """Finding 10: every query keeps the ModelDeployment's own namespace matcher."""
    for query in promql("digits", selector, "ml"):
        for part in query.split(" and on(instance) "):
            assert 'namespace="ml"' in part, part
def test_a_rollback_is_recorded_with_an_event() -> None:
    spec = RolloutSpec.model_validate(
        {"strategy": "canary", "steps": [{"weight": 20, "pauseSeconds": 30}]}
    )
    status = ModelDeploymentStatus(active_version=1, candidate_version=2, rollout_step=0)
    bad = GateInput(VersionMetrics(requests=100, errors=30), VersionMetrics(requests=400))
    plan = plan_rollout(spec, report.rollout_state(status), 2, bad, 10.0)
    notes = report.record_plan(status, plan, spec.strategy, NOW)
    assert [n.reason for n in notes] == ["RolledBack"]
    assert notes[0].type == "Warning"
    assert status.candidate_version is None and status.active_version == 1
    assert [r.version for r in status.rollbacks] == [2]
    assert status.gate is not None and status.gate.outcome == "Fail"
    assert status.traffic.candidate == 0
    assert report.rollout_state(status) == RolloutState(stable=1, rejected=frozenset({2}))


def test_conditions_follow_the_status() -> None:
    status = ModelDeploymentStatus(active_version=3, ready_replicas=2, desired_replicas=2)
    report.set_conditions(
        status, now=NOW, generation=4, version_message="", rolling=False, degraded=None
    )
    by_type = {c.type: c for c in status.conditions}
    assert by_type["Available"].status == "True"
    assert by_type["Progressing"].status == "False"
    assert by_type["Degraded"].status == "False"
    assert status.phase == "Available"
    report.set_conditions(
        status, now=NOW, generation=4, version_message="", rolling=False,
        degraded=("RolledBack", "version 4 failed"),
    )  # fmt: skip
    assert {c.type: c.status for c in status.conditions}["Degraded"] == "True"
    assert status.phase == "Degraded"
    # Available kept its transition time: it did not flip.
    assert {c.type: c for c in status.conditions}["Available"].last_transition_time == NOW


def test_the_summary_is_rewritten_only_on_meaningful_change() -> None:
    old = LiveMetrics(rps=100.0, p95_ms=20.0, error_rate=0.0, accuracy=0.9)
    assert not report.summary_changed(old, old.model_copy(update={"rps": 104.0, "p95_ms": 21.0}))
    assert report.summary_changed(old, old.model_copy(update={"rps": 130.0}))
    assert report.summary_changed(old, old.model_copy(update={"error_rate": 0.02}))
    assert report.summary_changed(old, old.model_copy(update={"accuracy": None}))


def test_merge_patch_removes_nested_keys() -> None:
    before = {"metrics": {"rps": 1.0, "p95Ms": 3.0}, "phase": "Available", "gate": {"x": 1}}
    after = {"metrics": {"rps": 2.0}, "phase": "Available"}
    assert report.merge_patch(before, after) == {
        "metrics": {"rps": 2.0, "p95Ms": None},
        "gate": None,
    }


def test_the_autoscaler_stage_writes_through_its_callable_and_reports() -> None:
    written: list[int] = []

    async def write(replicas: int) -> None:
        written.append(replicas)

    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "digits"},
            "replicas": 1,
            "autoscaling": {"target": 10, "maxReplicas": 8},
        }
    )
    status = ModelDeploymentStatus()
    totals, server = Totals(), Server()
    scaler = Autoscaler(write)
    for t, requests in ((0.0, 0), (5.0, 400)):  # 80 rps over 5 s
        server.serve("1", 200, 0.01, n=requests)
        totals.add(t, {"a": parse_exposition(server.text(), "digits")})
        replicas, note = asyncio.run(scaler.step(spec, status, totals, t, NOW))
    assert (replicas, written) == (5, [5])  # +4 (the HPA's default limit) toward 8
    assert note is not None and note.reason == "Scaled"
    assert status.last_scale is not None and status.last_scale.to_replicas == 5
    assert status.autoscaler is not None and status.autoscaler.reason == "RateLimited"
    assert status.autoscaler.load == 80.0
    # The watch has not caught up: spec still says 1, the autoscaler knows it wrote 5.
    assert scaler.current(spec) == 5
