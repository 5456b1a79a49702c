"""The Tune callback that keeps a search's progress document (shape: see `progress`).

It runs in the Tune driver and rebuilds the trial table from Tune's own trial list at
each event, so a restored search shows the trials finished before the restart too.
"""

from __future__ import annotations

import json
from typing import Any

from ray import tune

from modelops.api.search import PARAMS_METRIC, SearchSpec
from modelops_runtime.train import pareto, progress, search_space


def reported(result: dict[str, Any]) -> dict[str, float]:
    """The metrics of a trial's report: validation, training and the parameter count."""
    return {
        k: float(v)
        for k, v in result.items()
        if k.startswith(("val_", "train_")) or k == PARAMS_METRIC
    }


def ended_state(epoch: int, epochs: int) -> str:
    """A trial that ended without error: finished when it reached the last epoch."""
    return "finished" if epoch >= epochs else "stoppedEarly"


def params_text(search: SearchSpec, config: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in search_space.point(search, config).items()}


class SearchProgress(tune.Callback):  # type: ignore[misc]
    """Writes the progress document at each trial event."""

    def __init__(self, job_id: str, path: str, search: SearchSpec, epochs: int) -> None:
        self.job_id, self.path, self.search, self.epochs = job_id, path, search, epochs
        self.ended: dict[str, str] = {}

    def _state(self, trial: Any) -> str | None:
        if trial.trial_id in self.ended:
            return self.ended[trial.trial_id]
        status = trial.status
        if status == "ERROR":
            return "failed"
        if status == "TERMINATED":
            return ended_state(int((trial.last_result or {}).get("epoch", 0)), self.epochs)
        if status == "PENDING" and not trial.last_result:
            return None  # not started yet
        return "running"

    def _write(self, trials: list[Any]) -> None:
        entries = []
        for trial in trials:
            state = self._state(trial)
            if state is None:
                continue
            result = trial.last_result or {}
            entries.append(
                {
                    "id": trial.trial_id,
                    "params": params_text(self.search, trial.config),
                    "epoch": int(result.get("epoch", 0)),
                    "metrics": reported(result),
                    "state": state,
                }
            )
        summary = pareto.summarise(entries, self.search.goals(), self.search.select)
        best = summary.get("best", {}).get("metrics", {})
        progress.write(
            self.path,
            progress.document(
                self.job_id,
                epoch=sum(e["epoch"] for e in entries),
                total_epochs=self.epochs * self.search.trials,
                metrics={g.metric: best[g.metric] for g in self.search.goals() if g.metric in best},
                phase="search",
                trials=summary.pop("trials"),
                extra=summary,
            ),
        )

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self._write(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        epoch = int((trial.last_result or {}).get("epoch", 0))
        self.ended[trial.trial_id] = ended_state(epoch, self.epochs)
        self._write(trials)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = "failed"
        self._write(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._write(trials)
