"""spec.search as Ray Tune parts: the parameter space, the searcher and the scheduler.

Choices go to Tune as their strings (Optuna's categorical distribution takes scalars
only; a choice may be a list such as "[64, 32]") and are parsed with YAML rules in the
trial (`point`). Integer ranges include `high`. Every scheduler counts time in epochs
(`time_attr="epoch"`, `max_t` = training.epochs), which the loop reports once each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import yaml
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch

from modelops.api.search import (
    ParamType,
    SchedulerType,
    SearchParameter,
    SearchSpec,
)
from modelops.api.search import (
    SearchAlgorithm as Algorithm,
)

TIME_ATTR = "epoch"


def _domain(param: SearchParameter, grid: bool) -> Any:
    if param.type == ParamType.CHOICE:
        values = list(param.values or [])
        return tune.grid_search(values) if grid else tune.choice(values)
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if param.type == ParamType.UNIFORM:
        return tune.uniform(low, high)
    if param.type == ParamType.LOG_UNIFORM:
        return tune.loguniform(low, high)
    return tune.randint(math.ceil(low), math.floor(high) + 1)


def param_space(search: SearchSpec) -> dict[str, Any]:
    """Tune's space: one entry per path."""
    grid = search.algorithm == Algorithm.GRID
    return {param.path: _domain(param, grid) for param in search.space}


def grid_size(search: SearchSpec) -> int:
    return math.prod(len(param.values or []) for param in search.space)


def point(search: SearchSpec, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's {path: value}, choices parsed from their strings."""
    out: dict[str, Any] = {}
    for param in search.space:
        value = config[param.path]
        out[param.path] = yaml.safe_load(str(value)) if param.type == ParamType.CHOICE else value
    return out


def samples(search: SearchSpec) -> int:
    """Tune's num_samples: a grid runs each combination once."""
    if search.algorithm != Algorithm.GRID:
        return search.trials
    if grid_size(search) != search.trials:
        raise ValueError(
            f"search.trials: grid runs every combination of the choices, {grid_size(search)} "
            f"here, but trials is {search.trials}"
        )
    return 1


def random_points(search: SearchSpec, seed: int, count: int) -> list[dict[str, Any]]:
    """The first `count` points drawn from `seed`, as Tune configs (choices as strings).

    A random search runs them all; a tpe search of the same seed starts from its first
    startup trials, so the two differ only in what TPE proposes and what early stopping
    cuts, not in the luck of their first draws.
    """
    rng = np.random.default_rng(seed)
    domains = {param.path: _domain(param, grid=False) for param in search.space}
    return [
        {path: domain.sample(random_state=rng) for path, domain in domains.items()}
        for _ in range(count)
    ]


def startup_trials(search: SearchSpec) -> int:
    """tpe's random start-up trials: startupTrials, or half the trials and at most 10.

    Optuna's own default is 10 whatever the budget, which would leave a search of 12
    trials 2 to propose.
    """
    if search.startup_trials is not None:
        return search.startup_trials
    return max(1, min(10, search.trials // 2))


def searcher(search: SearchSpec, seed: int, max_concurrent: int) -> SearchAlgorithm | Searcher:
    """random: Tune's variant generator running `random_points` (it bounds its own
    concurrency: Tune's limiter wraps searchers only); grid: every combination; tpe:
    Optuna's TPE, seeded, after the start-up points, over every objective
    (multi-objective TPE when there are several)."""
    if search.algorithm == Algorithm.GRID:
        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    if search.algorithm == Algorithm.RANDOM:
        return BasicVariantGenerator(
            points_to_evaluate=random_points(search, seed, search.trials),
            random_state=seed,
            max_concurrent=max_concurrent,
        )
    import optuna

    goals = search.goals()
    startup = startup_trials(search)
    single = len(goals) == 1
    return OptunaSearch(
        metric=goals[0].metric if single else [g.metric for g in goals],
        mode=goals[0].mode.value if single else [g.mode.value for g in goals],
        # Optuna 5's defaults, stated: multivariate TPE for one objective (one parameter at a
        # time for several), and the constant liar, which keeps a proposal away from the
        # trials still running beside it. Optuna 4 defaulted both off.
        sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=single, constant_liar=True
        ),
        points_to_evaluate=random_points(search, seed, startup),
    )


def scheduler(search: SearchSpec, epochs: int) -> TrialScheduler:
    """The early-stopping scheduler, ranking trials by the first objective."""
    policy = search.early_stopping
    goal = search.goals()[0]
    common: dict[str, Any] = {
        "time_attr": TIME_ATTR,
        "metric": goal.metric,
        "mode": goal.mode.value,
    }
    grace = min(policy.grace_period, epochs)
    if policy.type == SchedulerType.ASHA:
        return ASHAScheduler(
            **common, max_t=epochs, grace_period=grace, reduction_factor=policy.reduction_factor
        )
    if policy.type == SchedulerType.HYPERBAND:
        return HyperBandScheduler(**common, max_t=epochs, reduction_factor=policy.reduction_factor)
    if policy.type == SchedulerType.MEDIAN:
        return MedianStoppingRule(**common, grace_period=grace, min_samples_required=2)
    return FIFOScheduler()
