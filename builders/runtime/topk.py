"""Pure logic of the `top_k` model, the last step of both pipeline ensembles.

Copied next to `model.py` and `item_ids.npy` into the model's version folder, so it
imports only numpy. The step checks `k` (the one input no earlier step reads), orders
the ranked candidates, drops padding and maps item indexes to catalog item ids.
"""

from __future__ import annotations

import numpy as np


class RequestError(ValueError):
    """A request the step answers with an INVALID_ARG error."""


def parse_k(values: np.ndarray | None) -> int:
    """The requested k: one integer, at least 1 (more than exists returns what exists)."""
    if values is None:
        raise RequestError("input 'k' is required")
    flat = np.asarray(values).reshape(-1)
    if flat.size != 1:
        raise RequestError(f"'k' must hold one value, got {flat.size}")
    k = int(flat[0])
    if k < 1:
        raise RequestError(f"'k' must be at least 1, got {k}")
    return k


def top_k(
    candidate_indexes: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates by score (ties keep retrieval order); padding (-1) dropped."""
    candidate_indexes = np.asarray(candidate_indexes).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if candidate_indexes.shape != scores.shape:
        raise RequestError(
            f"{candidate_indexes.size} candidates but {scores.size} scores; they must match"
        )
    valid = candidate_indexes >= 0
    indexes, scores = candidate_indexes[valid], scores[valid]
    order = np.argsort(-scores, kind="stable")[:k]
    return indexes[order], scores[order].astype(np.float32)


def results(
    item_ids: np.ndarray, candidate_indexes: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(item ids, scores, truncated) for one request; truncated: fewer than k exist."""
    indexes, best = top_k(candidate_indexes, scores, k)
    if len(indexes) and indexes.max() >= len(item_ids):
        raise RequestError(f"item index {indexes.max()} is outside 0..{len(item_ids) - 1}")
    return item_ids[indexes].astype(np.int64), best, len(indexes) < k
