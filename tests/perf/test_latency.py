"""perf.latency: percentiles in milliseconds, rounded as each results file keeps them."""

import numpy as np

from perf.latency import percentile_ms, summary


def test_percentile_interpolates_and_rounds():
    assert percentile_ms([0.0, 100.0], 99) == 99.0
    assert percentile_ms([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile_ms([1.0, 2.0, 3.0, 4.0], 99, 2) == 3.97
    assert percentile_ms([1.0, 2.0, 2.0 + 1 / 3], 99, 2) == 2.33
    assert percentile_ms(np.array([1.0, 2.0, 2.0 + 1 / 3]), 99, 3) == 2.327


def test_seconds_become_milliseconds_and_no_samples_give_none():
    assert percentile_ms([0.05, 0.2], 99, 2, seconds=True) == 198.5
    assert percentile_ms([0.001] * 98 + [1.0, 1.0], 99, 2, seconds=True) == 1000.0
    assert percentile_ms([], 99, 2, seconds=True) is None
    assert percentile_ms([], 50) is None


def test_summary_keys_and_rounding():
    assert summary([0.0, 100.0]) == {"p50_ms": 50.0, "p99_ms": 99.0}
    assert summary([1.0, 1.0 + 1 / 3], 2) == {"p50_ms": 1.17, "p99_ms": 1.33}
    assert summary([1.0, 1.0 + 1 / 3], 3) == {"p50_ms": 1.167, "p99_ms": 1.33}
