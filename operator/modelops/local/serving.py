"""A ModelDeployment in local mode: inference server processes behind one endpoint.

The same decisions as in a cluster: `lifecycle.rollout` picks the version and runs
the canary / shadow steps, `lifecycle.autoscale` picks the replica count from the
replicas' own /metrics, read through `lifecycle.servermetrics`. The servers' admin
API carries the traffic split and hot swaps (see the server's module docs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelops.api.deployment import (
    ModelDeployment,
    ModelDeploymentStatus,
    ScaleDecision,
    ShadowReport,
)
from modelops.lifecycle import autoscale
from modelops.lifecycle.rollout import (
    Action,
    GateInput,
    Plan,
    RolloutState,
    VersionMetrics,
    plan_rollout,
    resolve_version,
)
from modelops.lifecycle.servermetrics import ServerSample, Window, gauges, parse_exposition, window
from modelops.local.balancer import Balancer
from modelops.local.context import LocalContext, now
from modelops.local.rayhead import free_port
from modelops.local.serving_status import next_status

KIND = "ModelDeployment"


@dataclass
class Replica:
    name: str
    port: int
    url: str
    ready: bool = False
    started: float = 0.0


def _available_versions(store: str, model: str) -> list[int]:
    from modelops_runtime import artifacts  # fsspec; imported when used

    versions: list[int] = artifacts.list_versions(store, model)
    return versions


class LocalServing:
    """Replicas, routing, rollout and autoscaling of one ModelDeployment."""

    def __init__(self, deployment: ModelDeployment, ctx: LocalContext, port: int) -> None:
        self.md = deployment
        self.ctx = ctx
        self.name = deployment.metadata.name
        self.balancer = Balancer(ctx.host, port)
        self.replicas: dict[str, Replica] = {}
        self.sequence = 0
        stored = ctx.state.load_status(KIND, self.name)
        self.status = (
            ModelDeploymentStatus.model_validate(stored) if stored else ModelDeploymentStatus()
        )
        # No replica survives a restart of local mode: start counting from zero.
        self.status = self.status.model_copy(update={"replicas": 0, "ready_replicas": 0})
        # The servers start fresh: what they serve is re-established from the stable version.
        self.rollout = RolloutState(
            stable=self.status.active_version,
            rejected=frozenset(ctx.state.rejected(self.model)),
        )
        autoscaling = deployment.spec.autoscaling
        initial = deployment.spec.replicas or autoscaling.min_replicas or 1
        self.desired = max(autoscaling.min_replicas, min(autoscaling.max_replicas, initial))
        self.history = autoscale.History.start(time.monotonic(), self.desired)
        self.samples: dict[str, ServerSample] = {}  # the last scrape, by replica
        self.step_baseline: dict[str, ServerSample] | None = None
        self.last_scrape = 0.0
        self.session: aiohttp.ClientSession | None = None

    @property
    def model(self) -> str:
        return self.md.spec.model.name

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def resource(self) -> str:
        return f"md/{self.name}"

    async def start(self) -> None:
        self.save()
        await self.balancer.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    # --- replicas ------------------------------------------------------------------

    def _serve_args(self, port: int) -> list[str]:
        spec = self.md.spec
        batching = spec.batching
        args = ["serve", "--store", spec.model.store_uri, "--model", self.model]
        args += ["--version", str(self.rollout.stable), "--host", self.ctx.host]
        args += ["--port", str(port), "--max-batch-size", str(batching.max_batch_size)]
        args += ["--max-wait-ms", str(batching.max_wait_ms), "--max-queue", str(batching.max_queue)]
        args += ["--timeout-ms", str(batching.timeout_ms), "--drain-seconds", "2"]
        # The balancer spreads feedback like any request: replicas (this host, other
        # ports) forward it to the one that answered.
        args += ["--advertise-address", f"{self.ctx.host}:{port}", "--peers-dns", self.ctx.host]
        args += ["--peers-any-port"]
        if spec.ensemble is not None:
            members = ",".join(f"{m.version}:{m.weight or 1}" for m in spec.ensemble.members)
            args += ["--ensemble-method", spec.ensemble.method.value, "--members", members]
        candidate = self.rollout.candidate
        if candidate is not None:
            if self.status.traffic.shadow:
                args += ["--shadow", str(candidate)]
            else:
                args += ["--candidate", str(candidate)]
                args += ["--canary-weight", str(self.status.traffic.candidate)]
        return args

    def _start_replica(self) -> None:
        self.sequence += 1
        name = f"serve-{self.name}-{self.sequence}"
        port = free_port(self.ctx.host)
        self.ctx.supervisor.start(name, self.ctx.runtime(*self._serve_args(port)))
        self.replicas[name] = Replica(
            name, port, f"http://{self.ctx.host}:{port}", False, time.monotonic()
        )

    async def _stop_replica(self, name: str) -> None:
        replica = self.replicas.pop(name)
        self._publish()
        await asyncio.sleep(0.2)  # let the balancer stop sending before the server drains
        await asyncio.to_thread(self.ctx.supervisor.stop, replica.name, 10.0)

    def _publish(self) -> None:
        self.balancer.set_backends([r.url for r in self.replicas.values() if r.ready])

    async def _probe(self) -> None:
        assert self.session is not None
        for replica in list(self.replicas.values()):
            child = self.ctx.supervisor.get(replica.name)
            if child is None or child.returncode() is not None:
                self.ctx.event(
                    self.resource, "ReplicaExited", f"{replica.name} exited; replacing it"
                )
                self.ctx.supervisor.reap(replica.name)
                self.replicas.pop(replica.name, None)
                continue
            if replica.ready:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(replica.url + "/v2/health/ready") as response:
                    replica.ready = response.status == 200
        self._publish()

    async def _reconcile_count(self) -> None:
        while len(self.replicas) < self.desired:
            self._start_replica()
        surplus = len(self.replicas) - self.desired
        if surplus > 0:
            # Stop the youngest first: not-yet-ready ones, then the newest ready ones.
            order = sorted(self.replicas.values(), key=lambda r: (r.ready, -r.started))
            for replica in order[:surplus]:
                await self._stop_replica(replica.name)

    # --- metrics -------------------------------------------------------------------

    async def _scrape(self) -> dict[str, ServerSample] | None:
        """One sample per ready replica; None when none is ready."""
        assert self.session is not None
        ready = [r for r in self.replicas.values() if r.ready]
        if not ready:
            return None
        samples = {}
        for replica in ready:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.session.get(replica.url + "/metrics") as response:
                    text = await response.text()
                samples[replica.name] = parse_exposition(text, time.monotonic())
        return samples

    # --- rollout -------------------------------------------------------------------

    async def _admin(self, method: str, path: str, body: dict[str, Any]) -> None:
        assert self.session is not None
        for replica in [r for r in self.replicas.values() if r.ready]:
            async with self.session.request(method, replica.url + path, json=body) as response:
                if response.status >= 400:
                    raise RuntimeError(f"{replica.name} {path}: {await response.text()}")

    async def _apply(self, plan: Plan, before: RolloutState) -> None:
        state = plan.state
        if state.stable != before.stable and state.stable is not None:
            await self._admin("POST", "/v2/admin/load", {"version": state.stable, "role": "stable"})
        routing: dict[str, Any] = {
            "stable": str(state.stable),
            "candidate": str(state.candidate) if state.candidate is not None else None,
            "weight": plan.weight,
            "shadow": plan.shadow,
        }
        changed = (state.candidate, plan.weight, plan.shadow) != (
            before.candidate,
            self.status.traffic.candidate,
            self.status.traffic.shadow,
        )
        if changed or state.stable != before.stable:
            await self._admin("PUT", "/v2/admin/routing", routing)

    def _gate_input(self, latest: dict[str, ServerSample] | None) -> GateInput | None:
        if latest is None or self.step_baseline is None or self.rollout.candidate is None:
            return None
        win = window(self.step_baseline, latest)
        stable = win.per_version.get(str(self.rollout.stable), VersionMetrics())
        candidate = win.per_version.get(str(self.rollout.candidate), VersionMetrics())
        return GateInput(candidate=candidate, stable=stable)

    async def _roll(self, latest: dict[str, ServerSample] | None) -> Plan:
        promoted = self.ctx.state.promotions(self.model)
        available = await asyncio.to_thread(
            _available_versions, self.md.spec.model.store_uri, self.model
        )
        target = resolve_version(
            self.md.spec.model, promoted, self.rollout.rejected, available
        ).version
        before = self.rollout
        plan = plan_rollout(
            self.md.spec.rollout, before, target, self._gate_input(latest), time.monotonic()
        )
        if plan.action in (Action.START, Action.ADVANCE, Action.PROMOTE, Action.ROLLBACK):
            self.step_baseline = latest
        if any(r.ready for r in self.replicas.values()):
            await self._apply(plan, before)
        self.rollout = plan.state
        if plan.action in (
            Action.START,
            Action.ADVANCE,
            Action.PROMOTE,
            Action.ROLLBACK,
            Action.ABORT,
        ):
            self.ctx.event(self.resource, plan.action.value, plan.message)
        if plan.action == Action.ROLLBACK and before.candidate is not None:
            self.ctx.state.reject(self.model, before.candidate)
        return plan

    # --- autoscaling ---------------------------------------------------------------

    def _autoscale(self, win: Window | None, latest: dict[str, ServerSample] | None) -> None:
        config = self.md.spec.autoscaling
        if not config.enabled:
            self.desired = self.md.spec.replicas or self.desired
            return
        if win is None and self.replicas:
            return
        load = 0.0
        if win is not None and latest is not None:
            now_gauges = gauges(list(latest.values()))
            load = {
                "rps": win.rps,
                "concurrency": now_gauges.in_flight,
                "queueDepth": now_gauges.queued,
                "cpu": win.cpu_cores,
            }[config.metric.value]
        observed = autoscale.Observed(
            replicas=self.desired, load=load, queued=self.balancer.waiting
        )
        decision = autoscale.desired_replicas(config, observed, self.history, time.monotonic())
        self.history = decision.history
        if decision.changed:
            self.ctx.event(
                self.resource,
                decision.reason.value,
                f"{decision.current} -> {decision.replicas}: {decision.message}",
            )
            self.status = self.status.model_copy(
                update={
                    "last_scale": ScaleDecision(
                        time=now(),
                        from_replicas=decision.current,
                        to_replicas=decision.replicas,
                        load=max(load, 0.0),
                        reason=f"{decision.reason.value}: {decision.message}",
                    )
                }
            )
        self.desired = decision.replicas

    # --- the loop ------------------------------------------------------------------

    async def tick(self) -> None:
        await self._probe()
        latest: dict[str, ServerSample] | None = None
        win: Window | None = None
        interval = self.md.spec.autoscaling.interval_seconds
        if time.monotonic() - self.last_scrape >= interval:
            self.last_scrape = time.monotonic()
            latest = await self._scrape()
            if latest is not None:
                if self.samples:
                    win = window(self.samples, latest)
                self.samples = latest
        plan = await self._roll(latest or self.samples or None)
        if self.rollout.stable is not None:
            if latest is not None or not self.replicas:
                self._autoscale(win, latest)
            await self._reconcile_count()
        self._update_status(plan, win, latest)
        self.save()

    def _update_status(
        self, plan: Plan, win: Window | None, latest: dict[str, ServerSample] | None
    ) -> None:
        state = self.rollout
        current = gauges(list(latest.values())) if latest else None
        shadow = self.status.shadow
        if plan.shadow and current is not None and state.candidate is not None:
            gate = self._gate_input(latest)
            candidate = gate.candidate if gate else VersionMetrics()
            shadow = ShadowReport(
                requests=candidate.compared,
                agreement=current.agreement.get(str(state.candidate)),
                stable_accuracy=current.accuracy.get(str(state.stable)),
                candidate_accuracy=current.accuracy.get(str(state.candidate)),
            )
        self.status = next_status(
            self.status,
            state,
            plan,
            win=win,
            current=current,
            shadow=shadow,
            ready=sum(1 for r in self.replicas.values() if r.ready),
            replicas=len(self.replicas),
            desired=self.desired,
        )

    def save(self) -> None:
        self.ctx.state.save_status(KIND, self.name, self.md.spec.to_dict(), self.status.to_dict())

    async def close(self) -> None:
        await self.balancer.stop()
        if self.session is not None:
            await self.session.close()
