"""Hybrid candidates: the dense and the lexical candidates fused into one list.

Copied into the `hybrid_retrieval` model's version folder next to `hybrid_model.py`,
`lexical.py` (the BM25 index), the settings and the search index's item embeddings
(`item_embeddings.npy`, to score the lexical candidates the dense list lacks); the offline
pipeline and the encoders' gate call the same `hybrid`.

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


def hybrid(
    queries: list[str],
    query_embeddings: np.ndarray,
    dense_indexes: np.ndarray,
    dense_scores: np.ndarray,
    lexical,
    item_embeddings: np.ndarray,
    num_candidates: int,
    settings: FusionSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hybrid stage after the dense index, for B queries: BM25 retrieval by `lexical` (a
    `lexical.LexicalIndex`), which also scores the dense candidates, the dense scores of the
    BM25 candidates, and the fusion of both lists (`fuse`'s four [B, num_candidates] arrays).
    """
    lexical_indexes, lexical_scores, bm25_of_dense = lexical.search(
        queries, num_candidates, dense_indexes
    )
    return fuse(
        dense_indexes,
        dense_scores,
        lexical_indexes,
        lexical_scores,
        bm25_of_dense,
        dense_scores_of(item_embeddings, query_embeddings, lexical_indexes),
        num_candidates,
        settings,
    )


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
    the dense score of the lexical ones; `settings` default to `FusionSettings()`. All rows
    are fused at once, each exactly as it would be alone."""
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
    # Each row's items of both lists in ascending order; an item's slot is its first place
    # there (padding's slot, and a repeated item's later places, are not candidates).
    listed = np.concatenate([dense_indexes, lexical_indexes], axis=1).astype(np.int64)
    rows = np.arange(len(listed))[:, None]
    order = np.argsort(listed, axis=1, kind="stable")
    items = listed[rows, order]
    first = np.ones(items.shape, dtype=bool)
    first[:, 1:] = items[:, 1:] != items[:, :-1]
    valid = first & (items != PADDING)
    slots = np.empty_like(order)
    places = np.arange(listed.shape[1])
    slots[rows, order] = np.maximum.accumulate(np.where(first, places, 0), axis=1)
    d_slots, l_slots = np.split(slots, [dense_indexes.shape[1]], axis=1)

    # Later writes win: a dense candidate's own dense score over `dense_of_lexical`, a
    # lexical candidate's own BM25 over `bm25_of_dense`.
    item_dense = np.zeros(items.shape, dtype=np.float64)
    item_dense[rows, l_slots] = dense_of_lexical
    item_dense[rows, d_slots] = dense_scores
    item_lexical = np.zeros(items.shape, dtype=np.float64)
    item_lexical[rows, d_slots] = bm25_of_dense
    item_lexical[rows, l_slots] = lexical_scores
    best = np.where(lexical_indexes != PADDING, lexical_scores, 0).max(axis=1, initial=0)[:, None]
    np.divide(item_lexical, best, out=item_lexical, where=best > 0)
    if settings.method == "convex":
        low = item_dense.min(axis=1, keepdims=True, where=valid, initial=np.inf)
        spread = item_dense.max(axis=1, keepdims=True, where=valid, initial=-np.inf) - low
        scaled = np.zeros_like(item_dense)
        np.divide(item_dense - low, spread, out=scaled, where=spread > 0)
        totals = settings.dense_weight * scaled + (1 - settings.dense_weight) * item_lexical
    else:
        # Ranks count from 1 in each list; each item's sum adds its dense part first.
        d_ranks = np.arange(1.0, dense_indexes.shape[1] + 1)
        l_ranks = np.arange(1.0, lexical_indexes.shape[1] + 1)
        totals = np.zeros(items.shape, dtype=np.float64)
        np.add.at(totals, (rows, d_slots), 1 / (settings.rrf_k + d_ranks))
        np.add.at(totals, (rows, l_slots), settings.lexical_weight / (settings.rrf_k + l_ranks))

    # Best fused score first, ties by item index (slots are in item order).
    ranked = np.argsort(np.where(valid, -totals, np.inf), axis=1, kind="stable")
    ranked = ranked[:, :num_candidates]
    kept = valid[rows, ranked]

    def column(values: np.ndarray, pad: int, dtype) -> np.ndarray:
        out = np.full((len(listed), num_candidates), pad, dtype=dtype)
        out[:, : ranked.shape[1]] = np.where(kept, values[rows, ranked], pad)
        return out

    return (
        column(items, PADDING, np.int64),
        column(totals, 0, np.float32),
        column(item_dense, 0, np.float32),
        column(item_lexical, 0, np.float32),
    )
