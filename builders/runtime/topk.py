"""Pure logic of the `top_k` model, the last step of both pipeline ensembles.

Copied next to `model.py` and `item_ids.npy` into the model's version folder, so it
imports only numpy. The step checks `k` (the one input no earlier step reads), orders
the ranked candidates, drops padding and maps item indexes to catalog item ids.
"""

from __future__ import annotations

import numpy as np

#: The index of a padding candidate.
PADDING = -1


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
    candidate_indexes, scores = _candidates(candidate_indexes, scores)
    valid = candidate_indexes >= 0
    indexes, scores = candidate_indexes[valid], scores[valid]
    order = np.argsort(-scores, kind="stable")[:k]
    return indexes[order], scores[order].astype(np.float32)


def results(
    item_ids: np.ndarray, requests: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]
) -> list:
    """For each request (candidate indexes, scores, k values), its (item ids, scores,
    truncated: fewer than k exist) or the RequestError that refuses it. The requests that
    pass `parse_k` are ordered in one sort, so their candidates must be equally many."""
    answers = []
    for candidate_indexes, scores, k in requests:
        try:
            k = parse_k(k)
            answers.append((*_candidates(candidate_indexes, scores), k))
        except RequestError as err:
            answers.append(err)
    rows = [i for i, answer in enumerate(answers) if not isinstance(answer, RequestError)]
    if not rows:
        return answers
    indexes = np.stack([answers[i][0] for i in rows])
    scores = np.stack([answers[i][1] for i in rows])
    ks = np.array([answers[i][2] for i in rows])
    valid = indexes >= 0
    order = np.lexsort((-scores, ~valid))  # valid first, best first, ties in retrieval order
    grid = np.arange(len(rows))[:, None]
    indexes, scores = indexes[grid, order], scores[grid, order].astype(np.float32)
    counts = np.minimum(valid.sum(axis=1), ks)
    taken = np.arange(indexes.shape[1]) < counts[:, None]
    highest = np.where(taken, indexes, PADDING).max(axis=1, initial=PADDING)
    ids = item_ids[np.clip(indexes, 0, len(item_ids) - 1)].astype(np.int64)
    for row, i in enumerate(rows):
        count = counts[row]
        if highest[row] >= len(item_ids):
            message = f"item index {highest[row]} is outside 0..{len(item_ids) - 1}"
            answers[i] = RequestError(message)
        else:
            answers[i] = (ids[row, :count], scores[row, :count], bool(count < ks[row]))
    return answers


def _candidates(candidate_indexes, scores) -> tuple[np.ndarray, np.ndarray]:
    """A request's candidate indexes and scores, flat and equally many."""
    candidate_indexes = np.asarray(candidate_indexes).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if candidate_indexes.shape != scores.shape:
        raise RequestError(
            f"{candidate_indexes.size} candidates but {scores.size} scores; they must match"
        )
    return candidate_indexes, scores
