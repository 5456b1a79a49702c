"""Rollout decisions: which version to serve, and the canary / shadow step machine.

Everything here is a function of data: the spec, the rollout state kept in the
ModelDeployment's status, a gate verdict computed from live metrics, and the time.
The adapter reads metrics, calls `plan_rollout`, then applies the plan (the
servers' routing, the Deployment template) and records it in status.

Where a version comes from:
- `spec.model.version: N` pins version N;
- `latest` is the newest *promoted* version of the model: versions this
  ModelDeployment promoted (status.promotions), plus the `status.modelVersion`
  of Succeeded TrainingJobs that output this model (a TrainingJob that finished
  counts as passing its own gate), plus promotions other controllers record in
  status (IncrementalUpdate, later). Versions this deployment rolled back are
  skipped, so a failed candidate is not retried until a newer one appears.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from modelops.api.deployment import AnalysisSpec, ModelRef, RolloutSpec, RolloutStrategy

# ---------------------------------------------------------------------------
# Version resolution


@dataclass(frozen=True)
class Resolution:
    """The version to serve, or None with the reason there is none yet."""

    version: int | None
    message: str


def resolve_version(
    ref: ModelRef,
    promoted: Iterable[int],
    rejected: Collection[int] = (),
    available: Collection[int] | None = None,
) -> Resolution:
    """Pick the version `ref` asks for.

    `available` lists the versions found in the store when the caller can read
    it; None means it cannot, and promoted versions are trusted to exist.
    """
    if ref.version != "latest":
        version = int(ref.version)
        if available is not None and version not in available:
            return Resolution(None, f"version {version} of {ref.name} is not in the store")
        return Resolution(version, f"version {version} pinned by spec")
    candidates = {v for v in promoted if v not in rejected}
    if available is not None:
        candidates &= set(available)
    if not candidates:
        return Resolution(None, f"no promoted version of model {ref.name} yet")
    newest = max(candidates)
    return Resolution(newest, f"version {newest} is the newest promoted version")


# ---------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class VersionMetrics:
    """One version's live numbers over the window being judged."""

    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None
    accuracy: float | None = None
    feedback_rows: int = 0
    compared: int = 0
    agreement: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class Outcome(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    PENDING = "Pending"


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    ok: bool | None  # None: not enough evidence yet

    def describe(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        mark = {True: "ok", False: "FAILED", None: "pending"}[self.ok]
        return f"{self.name} {shown} (limit {self.threshold:g}) {mark}"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str
    checks: tuple[Check, ...] = ()
    evidence: int = 0


def evaluate_gate(
    analysis: AnalysisSpec,
    candidate: VersionMetrics,
    stable: VersionMetrics,
    *,
    shadow: bool = False,
    needs_traffic: bool = True,
) -> Verdict:
    """Judge the candidate; fail as soon as the evidence already settles it.

    Evidence is answered requests for a canary, compared rows for a shadow. A
    check runs only once `minRequests` of its evidence exist; accuracy and
    agreement are checked only where feedback or mirroring produced them. A
    step that routes no traffic (`needs_traffic=False`) passes on time alone.
    """
    need = analysis.min_requests
    evidence = candidate.compared if shadow else candidate.requests
    enough = evidence >= need
    checks: list[Check] = []

    if not shadow:
        # errors / max(n, need) is the lowest rate the step can end with, so a
        # burst of errors fails the step before minRequests arrive.
        floor_rate = candidate.errors / max(candidate.requests, need, 1)
        failed = floor_rate > analysis.max_error_rate
        ok = False if failed else (True if enough else None)
        checks.append(Check("errorRate", candidate.error_rate, analysis.max_error_rate, ok))
        if analysis.max_p95_ms is not None:
            p95 = candidate.p95_ms
            ok = None if not enough or p95 is None else p95 <= analysis.max_p95_ms
            checks.append(Check("p95Ms", p95, analysis.max_p95_ms, ok))

    rows_ok = candidate.feedback_rows >= need
    if analysis.min_accuracy is not None and candidate.accuracy is not None and rows_ok:
        checks.append(
            Check(
                "accuracy",
                candidate.accuracy,
                analysis.min_accuracy,
                candidate.accuracy >= analysis.min_accuracy,
            )
        )
    if (
        analysis.max_accuracy_drop is not None
        and candidate.accuracy is not None
        and stable.accuracy is not None
        and rows_ok
        and stable.feedback_rows >= need
    ):
        drop = stable.accuracy - candidate.accuracy
        checks.append(
            Check(
                "accuracyDrop", drop, analysis.max_accuracy_drop, drop <= analysis.max_accuracy_drop
            )
        )
    if analysis.min_agreement is not None and candidate.agreement is not None:
        ok = None if candidate.compared < need else candidate.agreement >= analysis.min_agreement
        checks.append(Check("agreement", candidate.agreement, analysis.min_agreement, ok))

    failed_checks = [c for c in checks if c.ok is False]
    if failed_checks:
        return Verdict(
            Outcome.FAIL, "; ".join(c.describe() for c in failed_checks), tuple(checks), evidence
        )
    if needs_traffic and not enough:
        unit = "compared rows" if shadow else "requests"
        return Verdict(Outcome.PENDING, f"{evidence}/{need} {unit}", tuple(checks), evidence)
    summary = "; ".join(c.describe() for c in checks) or "no checks"
    return Verdict(Outcome.PASS, summary, tuple(checks), evidence)


# ---------------------------------------------------------------------------
# The step machine


class Action(StrEnum):
    STEADY = "Steady"
    START = "Start"
    WAIT = "Wait"
    ADVANCE = "Advance"
    PROMOTE = "Promote"
    ROLLBACK = "Rollback"
    AWAIT_PROMOTION = "AwaitPromotion"
    ABORT = "Abort"
    NO_VERSION = "NoVersion"


@dataclass(frozen=True)
class RolloutState:
    """The part of status the step machine reads and writes (times in seconds)."""

    stable: int | None = None
    candidate: int | None = None
    step: int | None = None
    step_started: float | None = None
    rejected: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Plan:
    """What to serve next, and what happened to get there."""

    state: RolloutState
    action: Action
    message: str
    weight: int = 0
    shadow: bool = False
    verdict: Verdict | None = None

    @property
    def promoted(self) -> int | None:
        return self.state.stable if self.action == Action.PROMOTE else None


def _weight(rollout: RolloutSpec, step: int | None) -> int:
    if rollout.strategy != RolloutStrategy.CANARY or step is None or not rollout.steps:
        return 0
    return rollout.steps[min(step, len(rollout.steps) - 1)].weight


def _serving(
    rollout: RolloutSpec,
    state: RolloutState,
    action: Action,
    message: str,
    verdict: Verdict | None = None,
) -> Plan:
    shadow = state.candidate is not None and rollout.strategy == RolloutStrategy.SHADOW
    weight = _weight(rollout, state.step) if state.candidate is not None else 0
    return Plan(state, action, message, weight=weight, shadow=shadow, verdict=verdict)


def _start(rollout: RolloutSpec, state: RolloutState, target: int, now: float) -> Plan:
    started = replace(state, candidate=target, step=0, step_started=now)
    if rollout.strategy == RolloutStrategy.SHADOW:
        message = f"mirroring traffic to version {target} for {rollout.shadow_seconds}s"
    else:
        message = (
            f"canary of version {target} at {_weight(rollout, 0)}% (step 1/{len(rollout.steps)})"
        )
    return _serving(rollout, started, Action.START, message)


def _promote(rollout: RolloutSpec, state: RolloutState, message: str) -> Plan:
    assert state.candidate is not None
    done = replace(state, stable=state.candidate, candidate=None, step=None, step_started=None)
    return _serving(rollout, done, Action.PROMOTE, message)


def _rollback(rollout: RolloutSpec, state: RolloutState, message: str) -> Plan:
    assert state.candidate is not None
    back = RolloutState(stable=state.stable, rejected=state.rejected | {state.candidate})
    return _serving(rollout, back, Action.ROLLBACK, message)


@dataclass(frozen=True)
class GateInput:
    """The candidate's and the stable version's metrics over the current step."""

    candidate: VersionMetrics
    stable: VersionMetrics


def _judge(
    rollout: RolloutSpec,
    state: RolloutState,
    observed: GateInput,
    now: float,
    promote_requested: bool,
) -> Plan:
    candidate = state.candidate
    shadow = rollout.strategy == RolloutStrategy.SHADOW
    step = min(state.step or 0, max(len(rollout.steps) - 1, 0))
    weight = _weight(rollout, step)
    verdict = evaluate_gate(
        rollout.analysis,
        observed.candidate,
        observed.stable,
        shadow=shadow,
        needs_traffic=shadow or weight > 0,
    )
    elapsed = now - (state.step_started if state.step_started is not None else now)

    def serve(at: RolloutState, action: Action, message: str) -> Plan:
        return _serving(rollout, at, action, message, verdict)

    if verdict.outcome == Outcome.FAIL:
        message = f"version {candidate} failed its gate: {verdict.reason}"
        return replace(_rollback(rollout, state, message), verdict=verdict)
    if promote_requested:
        return replace(
            _promote(rollout, state, f"version {candidate} promoted by request"), verdict=verdict
        )
    if shadow:
        pause, last, where = float(rollout.shadow_seconds), True, "shadow run"
    else:
        pause, last = float(rollout.steps[step].pause_seconds), step + 1 >= len(rollout.steps)
        where = f"step {step + 1}/{len(rollout.steps)} at {weight}%"
    if elapsed < pause:
        # No elapsed seconds in the message: it would rewrite the status on every pass.
        return serve(state, Action.WAIT, f"{where}: watching for {pause:.0f}s; {verdict.reason}")
    if verdict.outcome == Outcome.PENDING:
        return serve(state, Action.WAIT, f"{where}: waiting for {verdict.reason}")
    if not last:
        advanced = replace(state, step=step + 1, step_started=now)
        message = f"{where} passed ({verdict.reason}); now at {_weight(rollout, step + 1)}%"
        return serve(advanced, Action.ADVANCE, message)
    if not rollout.auto_promote:
        return serve(state, Action.AWAIT_PROMOTION, f"{where} passed; awaiting promotion")
    message = f"version {candidate} passed the {where}: {verdict.reason}"
    return replace(_promote(rollout, state, message), verdict=verdict)


def plan_rollout(
    rollout: RolloutSpec,
    state: RolloutState,
    target: int | None,
    observed: GateInput | None,
    now: float,
    *,
    promote_requested: bool = False,
) -> Plan:
    """The next rollout state, given the version to serve and the live metrics.

    `observed` holds the metrics of the current candidate's current step; None
    when they could not be read, and the machine then waits.
    """
    if target is None:
        return _serving(rollout, state, Action.NO_VERSION, "no version to serve yet")
    if state.stable is None:
        first = RolloutState(stable=target, rejected=state.rejected)
        return _serving(rollout, first, Action.PROMOTE, f"version {target} is the first version")
    if target == state.stable:
        if state.candidate is not None:
            back = RolloutState(stable=state.stable, rejected=state.rejected)
            message = f"version {state.candidate} abandoned: version {target} is wanted again"
            return _serving(rollout, back, Action.ABORT, message)
        return _serving(rollout, state, Action.STEADY, f"serving version {target}")
    if target in state.rejected:
        if state.candidate is not None:
            state = RolloutState(stable=state.stable, rejected=state.rejected)
        message = f"version {target} was rolled back; serving version {state.stable}"
        return _serving(rollout, state, Action.STEADY, message)
    if rollout.strategy == RolloutStrategy.ROLLING:
        rolled = RolloutState(stable=target, rejected=state.rejected)
        return _serving(rollout, rolled, Action.PROMOTE, f"rolling update to version {target}")
    if state.candidate != target:
        return _start(rollout, state, target, now)
    if observed is None:
        return _serving(rollout, state, Action.WAIT, "waiting for the candidate's metrics")
    return _judge(rollout, state, observed, now, promote_requested)
