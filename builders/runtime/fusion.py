"""Hybrid candidates: the dense and the lexical candidates fused into one list.

Copied into the `hybrid_fusion` model's version folder next to `fusion_model.py`, the
settings and the search index's item embeddings (`item_embeddings.npy`, to score the
lexical candidates the dense list lacks); the offline pipeline calls the same functions.

Every candidate of either list has both scores (below), and `FusionSettings.method` (saved
with each version) says how they make the fused score:

* `convex` (the default): `dense_weight * d + (1 - dense_weight) * l`, where `d` is the
  item's dense score min-max scaled over the request's candidates and `l` its BM25 over the
  request's best (a convex combination of normalised scores: it beat reciprocal rank fusion
  in Bruch et al. 2023, and here it keeps a model number's or a typo's single lexical
  match on top, where rank fusion let the dense list's neighbours in);
* `rrf`: reciprocal rank fusion, the sum over the lists an item is in of `weight / (rrf_k +
  rank)` (rank from 1, Cormack et al. 2009), weight 1 for the dense list and
  `lexical_weight` for the lexical one. Versions saved before `method` existed are `rrf`.

Along with the fused order come the two scores the ranker reads for every fused candidate:

* `dense_scores`: the item's dense retrieval score (for an item only the lexical list holds,
  `dense_of_lexical`: the fusion model computes it from the index's item embeddings);
* `lexical_scores`: the item's BM25 divided by the request's best BM25, 0..1 (for an item
  only the dense list holds, from `bm25_of_dense`: the lexical stage scores the dense list).

Padding candidates (-1) in the inputs are skipped; missing places in the output are padding
with all scores 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PADDING = -1
SETTINGS_FILE = "fusion.json"
EMBEDDINGS_FILE = "item_embeddings.npy"


METHODS = ("convex", "rrf")


@dataclass(frozen=True)
class FusionSettings:
    method: str = "convex"
    dense_weight: float = 0.5  # convex: equal weights, not tuned on any evaluation set
    rrf_k: float = 60.0  # rrf: the usual constant
    lexical_weight: float = 1.0  # rrf

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fusion method {self.method!r}; expected one of {METHODS}")
        if not 0 <= self.dense_weight <= 1:
            raise ValueError(f"dense_weight must be in 0..1: {self}")
        if not (self.rrf_k >= 0 and self.lexical_weight >= 0):
            raise ValueError(f"rrf_k and lexical_weight must be non-negative: {self}")

    def save(self, folder: str | Path) -> None:
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> FusionSettings:
        saved = json.loads((Path(folder) / SETTINGS_FILE).read_text())
        return cls(**{"method": "rrf", **saved})


class FusionError(ValueError):
    """Inputs `fuse` cannot combine (shapes, types, non-finite scores)."""


def dense_scores_of(
    item_embeddings: np.ndarray, query_embeddings: np.ndarray, indexes: np.ndarray
) -> np.ndarray:
    """The dense score (embedding dot product) of each query [B, dim] with its items
    `indexes` [B, M] (-1 = padding: 0), float32 [B, M]."""
    indexes = np.asarray(indexes)
    if len(query_embeddings) != len(indexes):
        raise FusionError(f"{len(query_embeddings)} query embeddings for {len(indexes)} rows")
    if indexes.size and (indexes.min() < PADDING or indexes.max() >= len(item_embeddings)):
        raise FusionError(f"item indexes must be in 0..{len(item_embeddings) - 1} (or -1)")
    gathered = item_embeddings[np.maximum(indexes, 0)]
    scores = np.einsum("bmd,bd->bm", gathered, np.asarray(query_embeddings, np.float32))
    return np.where(indexes >= 0, scores, 0).astype(np.float32)


def fuse(
    dense_indexes: np.ndarray,
    dense_scores: np.ndarray,
    lexical_indexes: np.ndarray,
    lexical_scores: np.ndarray,
    bm25_of_dense: np.ndarray,
    dense_of_lexical: np.ndarray,
    num_candidates: int,
    settings: FusionSettings | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fuse [B, Nd] dense and [B, Nl] lexical candidates (each best first) into [B, n]:
    (candidate indexes int64, fused scores, dense scores, lexical scores: float32).
    `bm25_of_dense` [B, Nd] is the BM25 of the dense candidates, `dense_of_lexical` [B, Nl]
    the dense score of the lexical ones; `settings` default to `FusionSettings()`."""
    settings = settings or FusionSettings()
    arrays = [
        np.asarray(a)
        for a in (
            dense_indexes,
            dense_scores,
            lexical_indexes,
            lexical_scores,
            bm25_of_dense,
            dense_of_lexical,
        )
    ]
    dense_indexes, dense_scores, lexical_indexes, lexical_scores = arrays[:4]
    bm25_of_dense, dense_of_lexical = arrays[4:]
    for name, indexes, scores in (
        ("dense", dense_indexes, dense_scores),
        ("lexical", lexical_indexes, lexical_scores),
        ("dense", dense_indexes, bm25_of_dense),
        ("lexical", lexical_indexes, dense_of_lexical),
    ):
        if indexes.ndim != 2 or indexes.shape != scores.shape:
            raise FusionError(
                f"{name} candidates {indexes.shape} and scores {scores.shape} must both be "
                "[batch, candidates]"
            )
        if not np.issubdtype(indexes.dtype, np.integer):
            raise FusionError(f"{name} candidate indexes must be integers, got {indexes.dtype}")
        if not np.isfinite(scores).all():
            raise FusionError(f"{name} scores must be finite")
    if len(dense_indexes) != len(lexical_indexes):
        raise FusionError(
            f"{len(dense_indexes)} dense and {len(lexical_indexes)} lexical rows differ"
        )
    shape = (len(dense_indexes), num_candidates)
    candidates = np.full(shape, PADDING, dtype=np.int64)
    fused, dense, lexical = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    for row in range(len(dense_indexes)):
        d_valid = dense_indexes[row] != PADDING
        l_valid = lexical_indexes[row] != PADDING
        d_items, l_items = dense_indexes[row][d_valid], lexical_indexes[row][l_valid]
        items, slots = np.unique(np.concatenate([d_items, l_items]), return_inverse=True)
        item_dense = np.zeros(len(items), dtype=np.float64)
        item_dense[slots[len(d_items) :]] = dense_of_lexical[row][l_valid]
        item_dense[slots[: len(d_items)]] = dense_scores[row][d_valid]
        item_lexical = np.zeros(len(items), dtype=np.float64)
        item_lexical[slots[: len(d_items)]] = bm25_of_dense[row][d_valid]
        item_lexical[slots[len(d_items) :]] = lexical_scores[row][l_valid]
        best = lexical_scores[row][l_valid].max() if l_valid.any() else 0.0
        if best > 0:
            item_lexical /= best
        if settings.method == "convex":
            low, spread = (item_dense.min(), np.ptp(item_dense)) if len(items) else (0.0, 0.0)
            scaled = (item_dense - low) / spread if spread > 0 else np.zeros_like(item_dense)
            totals = settings.dense_weight * scaled + (1 - settings.dense_weight) * item_lexical
        else:
            d_ranks = np.flatnonzero(d_valid) + 1.0
            l_ranks = np.flatnonzero(l_valid) + 1.0
            d_parts = 1 / (settings.rrf_k + d_ranks)
            l_parts = settings.lexical_weight / (settings.rrf_k + l_ranks)
            contributions = np.concatenate([d_parts, l_parts])
            totals = np.bincount(slots, contributions, minlength=len(items))
        order = np.lexsort((items, -totals))[:num_candidates]
        width = len(order)
        candidates[row, :width] = items[order]
        fused[row, :width] = totals[order]
        dense[row, :width] = item_dense[order]
        lexical[row, :width] = item_lexical[order]
    return candidates, fused, dense, lexical
