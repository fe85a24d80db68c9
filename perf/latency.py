"""Latency percentiles of timed samples, rounded as each results file keeps them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile_ms(
    samples: Sequence[float] | np.ndarray,
    q: float,
    digits: int | None = None,
    seconds: bool = False,
) -> float | None:
    """The `q`-th percentile of `samples` in milliseconds (`seconds`: the samples are in
    seconds), rounded to `digits` unless None; None without samples."""
    values = np.asarray(samples) * 1000 if seconds else np.asarray(samples)
    if values.size == 0:
        return None
    value = float(np.percentile(values, q))
    return value if digits is None else round(value, digits)


def summary(samples_ms: Sequence[float] | np.ndarray, digits: int | None = None) -> dict:
    """`p50_ms` and `p99_ms` of `samples_ms` (see `percentile_ms`)."""
    return {
        "p50_ms": percentile_ms(samples_ms, 50, digits),
        "p99_ms": percentile_ms(samples_ms, 99, digits),
    }
