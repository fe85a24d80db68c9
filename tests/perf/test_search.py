"""Smart search against brute force on known score surfaces (pure)."""

from __future__ import annotations

import pytest

from perf.tuning import search

SPACE = {
    "m.delay": [0, 500, 1000, 2000, 4000],
    "m.instances": [1, 2, 3],
    "m.threads": [1, 2, 4],
    "m.preferred": [[], [8], [16]],
}


def separable(config: dict) -> float:
    """Throughput-like surface: a peak per dimension, mild interactions."""
    delay = -abs(config["m.delay"] - 1000) / 1000
    instances = -abs(config["m.instances"] - 2)
    threads = -abs(config["m.threads"] - 2) * (1 + 0.1 * config["m.instances"])
    preferred = {(): 0, (8,): 0.5, (16,): 0.2}[tuple(config["m.preferred"])]
    return 100 + 10 * delay + 8 * instances + 5 * threads + 3 * preferred


def counted(fn):
    calls = []

    def evaluate(config):
        calls.append(config)
        return fn(config)

    return evaluate, calls


def test_brute_finds_the_maximum():
    evaluate, calls = counted(separable)
    best, tried = search.brute(SPACE, evaluate)
    assert len(calls) == len(tried) == 5 * 3 * 3 * 3
    assert best == {"m.delay": 1000, "m.instances": 2, "m.threads": 2, "m.preferred": [8]}


def test_coordinate_descent_reaches_the_brute_optimum_in_far_fewer_trials():
    evaluate, calls = counted(separable)
    start = {"m.delay": 0, "m.instances": 1, "m.threads": 1, "m.preferred": []}
    best, tried = search.coordinate_descent(SPACE, start, evaluate)
    brute_best, brute_tried = search.brute(SPACE, separable)
    assert separable(best) == pytest.approx(separable(brute_best))
    assert len(calls) == len(tried) <= len(brute_tried) // 3
    assert len({search.key(c) for c in tried}) == len(tried)  # never measured twice


def test_tuple_scores_prefer_feasible_then_lowest_p99():
    """The sweep's score: (1, throughput) meets the SLO, (0, -p99) does not."""
    table = {0: (0, -300.0), 1: (0, -180.0), 2: (1, 40.0), 3: (1, 55.0)}
    best, _ = search.coordinate_descent(
        {"m.x": [0, 1, 2, 3]}, {"m.x": 0}, lambda c: table[c["m.x"]]
    )
    assert best == {"m.x": 3}
    best, _ = search.coordinate_descent({"m.x": [0, 1]}, {"m.x": 0}, lambda c: table[c["m.x"]])
    assert best == {"m.x": 1}


def test_invalid_configs_are_skipped():
    space = {"m.max": [8, 32], "m.preferred": [[], [16]]}

    def valid(c):
        return not c["m.preferred"] or c["m.preferred"][0] <= c["m.max"]

    assert len(list(search.grid(space, valid))) == 3
    evaluate, calls = counted(lambda c: c["m.max"] + len(c["m.preferred"]))
    best, _ = search.coordinate_descent(space, {"m.max": 8, "m.preferred": [16]}, evaluate, valid)
    assert all(valid(c) for c in calls)
    assert best == {"m.max": 32, "m.preferred": [16]}


def test_empty_space_is_an_error():
    with pytest.raises(ValueError, match="no valid config"):
        search.brute({"m.x": [1]}, lambda c: 0, valid=lambda c: False)
    with pytest.raises(ValueError, match="no valid config"):
        search.coordinate_descent({"m.x": [1]}, {"m.x": 1}, lambda c: 0, lambda c: False)
