"""The promotion gate: does a candidate evaluate at least as well as the serving version?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelops.api.training import Mode
from modelops.api.update import PromotionSpec


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and a sentence saying why."""

    promote: bool
    reason: str
    improvement: float | None = None


def improvement(candidate: float, current: float, mode: Mode) -> float:
    """How much better the candidate is; negative when worse."""
    return candidate - current if mode == Mode.MAX else current - candidate


def decide_promotion(
    candidate: float | None, current: float | None, spec: PromotionSpec
) -> GateResult:
    """Promote when the metric improves by `minImprovement`, or worsens by at most
    `maxRegression` when no improvement is required."""
    metric = spec.metric
    if candidate is None or math.isnan(candidate):
        return GateResult(False, f"candidate has no {metric}")
    if current is None or math.isnan(current):
        return GateResult(True, f"nothing serving yet; candidate {metric}={candidate:.4f}")
    gain = improvement(candidate, current, spec.mode)
    compared = f"{metric} {candidate:.4f} vs {current:.4f} (serving)"
    if spec.min_improvement > 0:
        if gain >= spec.min_improvement:
            return GateResult(True, f"{compared}: improves by {gain:.4f}", gain)
        return GateResult(
            False, f"{compared}: improvement {gain:.4f} below {spec.min_improvement}", gain
        )
    if gain >= -spec.max_regression:
        return GateResult(True, f"{compared}: within the allowed regression", gain)
    return GateResult(
        False, f"{compared}: regresses by {-gain:.4f}, more than {spec.max_regression}", gain
    )


# -- which versions count as promoted ---------------------------------------------------

# TrainingJobs an IncrementalUpdate runs carry this label: their update's gate, not their
# own success, promotes their version.
UPDATE_RUN_LABEL = "modelops.dev/update"


def promoted_by_training(
    labels: Mapping[str, str], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> tuple[str, int] | None:
    """(model, version) a TrainingJob promotes by succeeding; None for an update's run.

    The one rule of what counts as promoted, with `promoted_by_update`: a Succeeded
    TrainingJob that is not an update run promotes its version; an update run's version
    is promoted only when its IncrementalUpdate's gate let it through.
    """
    if UPDATE_RUN_LABEL in labels:
        return None
    produced = status.get("modelVersion") or {}
    model = (spec.get("output") or {}).get("modelName")
    if status.get("phase") != "Succeeded" or not model or not produced.get("version"):
        return None
    return str(model), int(produced["version"])


def promoted_by_update(status: Mapping[str, Any]) -> tuple[str, set[int]] | None:
    """(model, versions) an IncrementalUpdate's gate promoted, from its status."""
    model = status.get("modelName")
    versions = {int(v) for v in status.get("promotedVersions") or ()}
    if status.get("promotedVersion"):
        versions.add(int(status["promotedVersion"]))
    if not model or not versions:
        return None
    return str(model), versions
