"""Hyperparameter search on real Ray Tune: each searcher and scheduler, Pareto selection,
a trial of two Ray Train workers, and a search resumed after its driver was killed.

Tiny runs: the digits MLP with one small hidden layer, a few epochs, a few trials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelops.api.search import Objective, SearchSpec
from modelops.api.training import Mode
from modelops_runtime import artifacts
from modelops_runtime.train import job, pareto, progress, search_space
from modelops_runtime.train import search as search_module
from tests.runtime.train_helpers import digits_spec, merge, training_job

REPO = Path(__file__).resolve().parents[2]
# A learning rate that cannot learn in a few epochs, beside one that does.
GOOD_LR, BAD_LRS = "0.01", ["0.000001", "0.0000005", "0.0000002"]


def search_spec(
    digits: Path, store: Path, search: dict[str, Any], epochs: int = 4
) -> dict[str, Any]:
    return digits_spec(
        digits,
        store,
        model={"hiddenLayers": [16], "dropout": 0.0},
        training={
            "epochs": epochs,
            "batchSize": 128,
            "schedule": {"type": "constant", "warmupEpochs": 0},
        },
        resources={"cpusPerWorker": "500m"},
        search=search,
    )


def lr_grid(scheduler: dict[str, Any], lrs: list[str]) -> dict[str, Any]:
    return {
        "trials": len(lrs),
        "algorithm": "grid",
        "earlyStopping": scheduler,
        "metric": "val_accuracy",
        "mode": "max",
        "space": [{"path": "training.optimizer.learningRate", "type": "choice", "values": lrs}],
    }


def run_search(name: str, spec: dict[str, Any], progress_file: Path) -> job.JobResult:
    return job.run(training_job(name, spec), name, progress_path=str(progress_file))


def by_lr(result: job.JobResult) -> dict[str, dict[str, Any]]:
    return {json.loads(t["params"]["training.optimizer.learningRate"]): t for t in result.trials}


def test_asha_stops_the_bad_learning_rates_early(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    # One trial at a time, the good one first: each bad one meets ASHA's first rung
    # below the good one's value there, and stops.
    spec = search_spec(
        digits_dir,
        tmp_path,
        lr_grid({"type": "asha", "gracePeriod": 1, "reductionFactor": 2}, [GOOD_LR, *BAD_LRS]),
    )
    progress_file = tmp_path / "progress.json"
    result = run_search("asha", spec, progress_file)

    trials = by_lr(result)
    assert trials[float(GOOD_LR)]["state"] == "finished" and trials[float(GOOD_LR)]["epochs"] == 4
    for lr in BAD_LRS:
        assert trials[float(lr)]["state"] == "stoppedEarly", trials[float(lr)]
        assert trials[float(lr)]["epochs"] < 4
    assert result.record["search"]["best"] == trials[float(GOOD_LR)]["id"]

    doc = json.loads(progress_file.read_text())
    assert doc["phase"] == "finished"
    assert doc["trialCounts"] == {"running": 0, "stoppedEarly": 3, "finished": 1, "failed": 0}
    assert doc["best"]["trial"] == trials[float(GOOD_LR)]["id"]
    # Early stopping saved trial-epochs: fewer than every trial running every epoch.
    assert sum(t["epochs"] for t in result.trials) < 4 * len(result.trials)


def test_search_progress_document_counts_trials_by_state(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    asha = {"type": "asha", "gracePeriod": 1, "reductionFactor": 2}
    spec = search_spec(digits_dir, tmp_path, lr_grid(asha, [GOOD_LR, BAD_LRS[0]]), epochs=3)
    progress_file = tmp_path / "progress.json"
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            doc = progress.read(progress_file)
            if doc and doc.get("phase") == "search" and doc not in seen:
                seen.append(doc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_search("counts", spec, progress_file)
    finally:
        done.set()
        watcher.join()
    assert seen, "no search progress document was written during the search"
    assert any(d["trialCounts"]["running"] >= 1 for d in seen)
    for doc in seen:
        states = [t["state"] for t in doc["trials"]]
        assert doc["trialCounts"] == {s: states.count(s) for s in doc["trialCounts"]}
        for entry in doc["trials"]:
            assert set(entry) == {"id", "params", "epoch", "metrics", "state", "pareto"}
            assert entry["pareto"] == (entry["state"] == "finished")
    # The search's last document can be replaced by the job's final one between two
    # polls; the final one carries the same counts and pick.
    final = progress.read(progress_file)
    assert final is not None and final["phase"] == "finished"
    assert final["trialCounts"] == {"running": 0, "stoppedEarly": 1, "finished": 1, "failed": 0}
    good = next(t for t in result.trials if t["state"] == "finished")
    assert final["best"] == {"trial": good["id"], "metrics": good["metrics"]}
    assert {t["state"] for t in result.trials} == {"finished", "stoppedEarly"}


@pytest.mark.parametrize("scheduler", ["hyperband", "median"])
def test_other_schedulers_finish_the_search_and_keep_the_good_trial(
    scheduler: str, ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    lrs = [GOOD_LR, BAD_LRS[0], "0.02"]
    spec = search_spec(
        digits_dir,
        tmp_path,
        lr_grid({"type": scheduler, "gracePeriod": 1, "reductionFactor": 2}, lrs),
    )
    result = run_search(scheduler, spec, tmp_path / "progress.json")
    trials = by_lr(result)
    assert set(trials) == {float(lr) for lr in lrs}
    assert all(t["state"] in {"finished", "stoppedEarly"} for t in trials.values())
    best = next(t for t in result.trials if t["id"] == result.record["search"]["best"])
    assert json.loads(best["params"]["training.optimizer.learningRate"]) != float(BAD_LRS[0])
    assert trials[float(BAD_LRS[0])]["metrics"]["val_accuracy"] < best["metrics"]["val_accuracy"]


SPACE = [
    {"path": "training.optimizer.learningRate", "type": "logUniform", "low": 0.001, "high": 0.03},
    {"path": "model.hiddenLayers", "type": "choice", "values": ["[8]", "[16, 8]"]},
]


def small_search(algorithm: str) -> dict[str, Any]:
    return {
        "trials": 2,
        "maxConcurrent": 2,
        "algorithm": algorithm,
        "earlyStopping": {"type": "none"},
        "metric": "val_accuracy",
        "mode": "max",
        "space": SPACE,
    }


def test_random_search_draws_the_same_points_from_the_same_seed(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    points = []
    for attempt in range(2):
        spec = search_spec(digits_dir, tmp_path / str(attempt), small_search("random"), epochs=1)
        result = run_search(f"random-{attempt}", spec, tmp_path / f"{attempt}.json")
        assert len(result.trials) == 2 and all(t["state"] == "finished" for t in result.trials)
        points.append(sorted(json.dumps(t["params"], sort_keys=True) for t in result.trials))
    assert points[0] == points[1]
    assert len(set(points[0])) == 2
    # They are `random_points` of the job's seed, which a tpe search starts from.
    job_spec = training_job("random", spec).spec
    assert job_spec.search is not None
    drawn = search_space.random_points(job_spec.search, job_spec.training.seed, 2)
    assert points[0] == sorted(record_of(job_spec.search, point) for point in drawn)


def record_of(search: SearchSpec, config: dict[str, Any]) -> str:
    """A Tune config as the trial records show its params."""
    point = search_space.point(search, config)
    return json.dumps({k: json.dumps(v) for k, v in point.items()}, sort_keys=True)


def test_random_points_are_seeded_and_inside_the_space() -> None:
    search = SearchSpec.model_validate(
        {
            "trials": 40,
            "space": [
                *SPACE,
                {"path": "model.dropout", "type": "uniform", "low": 0.1, "high": 0.2},
                {"path": "training.epochs", "type": "integer", "low": 2, "high": 4},
            ],
        }
    )
    points = search_space.random_points(search, 3, 40)
    assert points == search_space.random_points(search, 3, 40)
    assert points[:5] == search_space.random_points(search, 3, 5)  # a prefix: tpe's start-up
    assert points != search_space.random_points(search, 4, 40)
    for point in points:
        assert 0.001 <= point["training.optimizer.learningRate"] <= 0.03
        assert point["model.hiddenLayers"] in ("[8]", "[16, 8]")
        assert 0.1 <= point["model.dropout"] <= 0.2
    assert {p["training.epochs"] for p in points} == {2, 3, 4}  # integer ranges include high
    assert {p["model.hiddenLayers"] for p in points} == {"[8]", "[16, 8]"}
    # Log-uniform: about half the draws below the geometric midpoint (0.0055), not 5 %.
    low = sum(p["training.optimizer.learningRate"] < 0.0055 for p in points)
    assert 10 <= low <= 30


def test_tpe_starts_from_the_random_searchs_points() -> None:
    search = SearchSpec.model_validate(
        {"trials": 16, "algorithm": "tpe", "metric": "val_accuracy", "mode": "max", "space": SPACE}
    )
    assert search_space.startup_trials(search) == 8  # half the trials, at most 10
    assert search_space.startup_trials(search.model_copy(update={"trials": 50})) == 10
    assert search_space.startup_trials(search.model_copy(update={"startup_trials": 3})) == 3
    searcher = search_space.searcher(search, 11, 1)
    searcher.set_search_properties(None, None, search_space.param_space(search))
    proposed = [searcher.suggest(f"t{i}") for i in range(9)]
    drawn = search_space.random_points(search, 11, 16)
    assert proposed[:8] == drawn[:8]
    assert proposed[8] not in drawn  # then TPE's own proposal


def test_tpe_search_runs_optuna_seeded_from_the_job(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    spec = search_spec(digits_dir, tmp_path, small_search("tpe"), epochs=1)
    result = run_search("tpe", spec, tmp_path / "p.json")
    assert len(result.trials) == 2 and all(t["state"] == "finished" for t in result.trials)
    for trial in result.trials:
        assert 0.001 <= json.loads(trial["params"]["training.optimizer.learningRate"]) <= 0.03
        assert json.loads(trial["params"]["model.hiddenLayers"]) in ([8], [16, 8])

    # The same seed makes Optuna's sampler propose the same points.
    search = training_job("tpe", spec).spec.search
    assert search is not None

    def proposals(seed: int) -> list[dict[str, Any]]:
        searcher = search_space.searcher(search, seed, 1)
        searcher.set_search_properties(None, None, search_space.param_space(search))
        return [searcher.suggest(f"t{i}") for i in range(3)]

    assert proposals(7) == proposals(7) != proposals(8)


def test_multi_objective_search_stores_the_selected_member_of_the_pareto_front(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    search = {
        "trials": 3,
        "maxConcurrent": 2,
        "algorithm": "grid",
        "earlyStopping": {"type": "none"},
        "objectives": [
            {"metric": "val_accuracy", "mode": "max"},
            {"metric": "params", "mode": "min"},
        ],
        "select": {
            "metric": "val_accuracy",
            "mode": "max",
            "tieBreak": {"metric": "params", "mode": "min"},
        },
        "ensembleTopK": 2,
        "space": [
            {"path": "model.hiddenLayers", "type": "choice", "values": ["[2]", "[8]", "[32]"]}
        ],
    }
    result = run_search(
        "pareto", search_spec(digits_dir, tmp_path, search, epochs=2), tmp_path / "p.json"
    )

    goals = [
        Objective(metric="val_accuracy", mode=Mode.MAX),
        Objective(metric="params", mode=Mode.MIN),
    ]
    finished = [t for t in result.trials if t["state"] == "finished"]
    assert len(finished) == 3 and all(t["metrics"]["params"] > 0 for t in finished)
    front = pareto.front(finished, lambda t: t["metrics"], goals)
    assert {t["id"] for t in result.trials if t["pareto"]} == {t["id"] for t in front}
    # The smallest network has the fewest parameters: always on the front.
    smallest = min(finished, key=lambda t: t["metrics"]["params"])
    assert smallest["pareto"]
    chosen = max(front, key=lambda t: (t["metrics"]["val_accuracy"], -t["metrics"]["params"]))
    assert result.record["search"]["best"] == chosen["id"]
    card = artifacts.load_card(result.ref.uri)
    members = [m.source for m in card.ensemble.members] if card.ensemble else [chosen["id"]]
    assert set(members) <= {t["id"] for t in front} and members[0] == chosen["id"]


def test_a_trial_of_two_workers_trains_with_ddp(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    search = {
        "trials": 1,
        "algorithm": "random",
        "workersPerTrial": 2,
        "earlyStopping": {"type": "none"},
        "metric": "val_accuracy",
        "mode": "max",
        "space": [
            {"path": "training.optimizer.learningRate", "type": "choice", "values": [GOOD_LR]}
        ],
    }
    result = run_search(
        "ddp", search_spec(digits_dir, tmp_path, search, epochs=2), tmp_path / "p.json"
    )
    (trial,) = result.trials
    assert trial["state"] == "finished" and trial["epochs"] == 2
    last = result.record["epochs"][-1]
    # Rank 0 records its own examples and the throughput of both ranks together: half.
    both = last["samples_per_second"] * last["train_seconds"]
    assert last["samples"] == pytest.approx(both / 2, rel=0.1)
    assert result.ref.metrics["accuracy"] > 0.5


CHILD = """
import sys
from modelops_runtime.train import job
from tests.runtime.train_helpers import training_job
import json
spec = json.loads(sys.argv[1])
job.run(training_job("resume", spec), "resume", progress_path=sys.argv[2])
"""


def test_a_search_resumes_after_its_driver_is_killed_without_redoing_finished_trials(
    ray_session: Any, digits_dir: Path, tmp_path: Path
) -> None:
    trials = 8
    search = {
        "trials": trials,
        "maxConcurrent": 1,
        "algorithm": "random",
        "earlyStopping": {"type": "none"},
        "metric": "val_accuracy",
        "mode": "max",
        "space": [
            {
                "path": "training.optimizer.learningRate",
                "type": "logUniform",
                "low": 0.001,
                "high": 0.02,
            }
        ],
    }
    # Small batches: each trial takes a few seconds, so the driver dies mid-search.
    spec = merge(
        search_spec(digits_dir, tmp_path, search, epochs=8), {"training": {"batchSize": 8}}
    )
    progress_file = tmp_path / "progress.json"
    log_file = tmp_path / "child.log"
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
        "PYTHONPATH": str(REPO),
    }
    with log_file.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(spec), str(progress_file)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            doc: dict[str, Any] = {}
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and child.poll() is None:
                doc = progress.read(progress_file) or {}
                if doc.get("trialCounts", {}).get("finished", 0) >= 2:
                    break
                time.sleep(0.05)
            # Tune saves the experiment state every STATE_SECONDS: after twice that, the
            # trials seen finished above are in the saved state.
            time.sleep(2 * search_module.STATE_SECONDS)
            assert child.poll() is None, (
                f"the search ended unkilled: {log_file.read_text()[-3000:]}"
            )
            child.send_signal(signal.SIGKILL)
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    done = {t["id"] for t in doc["trials"] if t["state"] == "finished"}
    assert 2 <= len(done) < trials
    trials_root = next((tmp_path / "digits" / "checkpoints" / "resume").glob("*/trials"))

    def last_write(trial_id: str) -> int:
        return max(
            s.stat().st_mtime_ns for s in (trials_root / trial_id).glob("epoch-*/state.json")
        )

    before = {trial_id: last_write(trial_id) for trial_id in done}

    result = job.run(training_job("resume", spec), "resume", progress_path=str(progress_file))

    assert len(result.trials) == trials and all(t["state"] == "finished" for t in result.trials)
    assert {t["id"] for t in result.trials} >= done
    assert {trial_id: last_write(trial_id) for trial_id in done} == before, (
        "finished trials ran again"
    )


def test_grid_needs_trials_to_match_the_combinations() -> None:
    spec = training_job(
        "g",
        digits_spec(
            Path("/nowhere"), Path("/tmp"), search=lr_grid({"type": "none"}, [GOOD_LR, BAD_LRS[0]])
        ),
    ).spec
    assert spec.search is not None
    bad = spec.search.model_copy(update={"trials": 3})
    with pytest.raises(
        ValueError, match=r"search\.trials: grid runs every combination of the choices, 2"
    ):
        search_space.samples(bad)
    assert search_space.samples(spec.search) == 1
