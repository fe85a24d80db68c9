"""Which configs to try: brute force over the grid, or coordinate descent.

A config is a dict `model.tunable -> value`. `evaluate(config)` returns a score
that compares with `>`: the sweep uses `(1, throughput at the SLO)` for a config
that meets the SLO and `(0, -p99)` for one that does not, so an infeasible space
still ranks its configs by how close they come.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

Config = dict[str, object]


def key(config: Config) -> str:
    """A stable text key for a config."""
    return json.dumps(config, sort_keys=True)


def grid(dimensions: dict[str, list], valid: Callable[[Config], bool] = lambda c: True):
    """Every valid combination of the dimensions' values, in file order."""
    names = list(dimensions)
    for values in itertools.product(*(dimensions[n] for n in names)):
        config = dict(zip(names, values))
        if valid(config):
            yield config


def brute(dimensions, evaluate, valid=lambda c: True) -> tuple[Config, list[Config]]:
    """Evaluate every config; return the best and the configs in the order tried."""
    tried = list(grid(dimensions, valid))
    if not tried:
        raise ValueError("the space holds no valid config")
    scores = [evaluate(config) for config in tried]
    best = max(range(len(tried)), key=lambda i: scores[i])
    return tried[best], tried


def coordinate_descent(
    dimensions: dict[str, list],
    start: Config,
    evaluate: Callable[[Config], object],
    valid: Callable[[Config], bool] = lambda c: True,
    max_passes: int = 2,
) -> tuple[Config, list[Config]]:
    """Tune one dimension at a time, the others held at the best so far.

    Each pass walks every dimension once; it stops after a pass that changes
    nothing, or after `max_passes`. Configs are evaluated at most once.
    Return the best config and the configs in the order tried.
    """
    if not valid(start):
        start = next(grid(dimensions, valid), None)
        if start is None:
            raise ValueError("the space holds no valid config")
    scores: dict[str, object] = {}
    tried: list[Config] = []

    def score(config: Config) -> object:
        k = key(config)
        if k not in scores:
            scores[k] = evaluate(config)
            tried.append(config)
        return scores[k]

    best = dict(start)
    best_score = score(best)
    for _ in range(max_passes):
        changed = False
        for name, values in dimensions.items():
            for value in values:
                candidate = {**best, name: value}
                if candidate[name] == best[name] or not valid(candidate):
                    continue
                candidate_score = score(candidate)
                if candidate_score > best_score:
                    best, best_score, changed = candidate, candidate_score, True
        if not changed:
            break
    return best, tried
