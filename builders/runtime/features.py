"""Ranker features: lookup tables and the one function that turns candidates into model inputs.

Copied into the `features` model's version folder next to `model.py` and `tables.npz`, so it
imports only the standard library and numpy. Training builds its examples with the same
`ranker_inputs`, so what the ranker learns from is exactly what it is served.

Every sparse column is a vocabulary id in which 0 means unknown, missing or padding:

* `user`: the user index (1..n_users, by first logged event: `builders.data.with_user_indexes`;
  0 = unknown / cold-start user);
* `item`: the item index plus one (0 = padding candidate, item index -1);
* `category`: 1..n_categories in sorted category order;
* `brand`: 1..n_brands in sorted brand order (0 = no brand);
* `price_bucket`: the price's decile within its category, 1..PRICE_BUCKETS (0 = no price).

Dense columns:

* `retrieval_score`: the dense retrieval score (cosine or dot product; 0 for padding);
* `lexical_score`: the candidate's BM25 relative to the request's best (search with hybrid
  retrieval, `fusion.fuse`; 0 where there is no lexical stage, as in recommend);
* `log_popularity`: log1p(event-weighted interactions) scaled to 0..1 by the catalog maximum;
* `user_category_affinity`: the user's smoothed share of interactions in the item's category
  (unknown users: the share of all interactions);
* `price_gap`: the item's price percentile within its category minus the user's usual
  percentile (0 when the item has no price).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

SPARSE_FEATURES = ("user", "item", "category", "brand", "price_bucket")
DENSE_FEATURES = (
    "retrieval_score",
    "lexical_score",
    "log_popularity",
    "user_category_affinity",
    "price_gap",
)
#: S and D: the last dimension of the `sparse` and `dense` tensors.
NUM_SPARSE = len(SPARSE_FEATURES)
NUM_DENSE = len(DENSE_FEATURES)
PRICE_BUCKETS = 10
#: The item index of a padding candidate (the catalog holds fewer items than candidates).
PADDING_ITEM = -1


class FeatureError(ValueError):
    """Inputs `ranker_inputs` cannot turn into features (shapes, ranges, non-finite scores)."""


@dataclass(frozen=True, eq=False)
class FeatureTables:
    """Per-user and per-item lookup arrays.

    Item arrays have n_items + 1 rows (row 0 is the padding candidate, row i + 1 item index i);
    user arrays have n_users + 1 rows (row 0 is the unknown user).
    """

    user_ids: np.ndarray  # int64 [n_users], unique: user index = position + 1
    item_ids: np.ndarray  # int64 [n_items], sorted: item index = position
    item_category: np.ndarray  # int64 [n_items + 1], 1..n_categories
    item_brand: np.ndarray  # int64 [n_items + 1], 0 = no brand
    item_price_bucket: np.ndarray  # int64 [n_items + 1], 0 = no price
    item_price_percentile: np.ndarray  # float32 [n_items + 1], NaN = no price
    item_log_popularity: np.ndarray  # float32 [n_items + 1], 0..1
    user_category_affinity: np.ndarray  # float32 [n_users + 1, n_categories + 1]
    user_price_level: np.ndarray  # float32 [n_users + 1], 0..1
    category_names: np.ndarray  # str [n_categories]
    brand_names: np.ndarray  # str [n_brands]

    def __post_init__(self) -> None:
        n_items, n_users = len(self.item_ids), len(self.user_ids)
        if self.user_ids.ndim != 1 or len(np.unique(self.user_ids)) != n_users:
            raise ValueError("FeatureTables.user_ids must be unique")
        ids = self.item_ids
        if ids.ndim != 1 or (len(ids) > 1 and not (np.diff(ids) > 0).all()):
            raise ValueError("FeatureTables.item_ids must be sorted and unique")
        # Built once: `user_indexes` runs on every batch the features stage answers.
        object.__setattr__(self, "_user_lookup", user_lookup(self.user_ids))
        for name in (
            "item_category",
            "item_brand",
            "item_price_bucket",
            "item_price_percentile",
            "item_log_popularity",
        ):
            if getattr(self, name).shape != (n_items + 1,):
                raise ValueError(f"FeatureTables.{name} must have n_items + 1 = {n_items + 1} rows")
        if self.user_price_level.shape != (n_users + 1,):
            raise ValueError(f"FeatureTables.user_price_level must have {n_users + 1} rows")
        expected = (n_users + 1, len(self.category_names) + 1)
        if self.user_category_affinity.shape != expected:
            raise ValueError(f"FeatureTables.user_category_affinity must be {expected}")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def vocabulary_sizes(self) -> tuple[int, ...]:
        """Rows each sparse column's embedding table needs, in SPARSE_FEATURES order."""
        return (
            self.n_users + 1,
            self.n_items + 1,
            len(self.category_names) + 1,
            len(self.brand_names) + 1,
            PRICE_BUCKETS + 1,
        )

    def user_indexes(self, user_ids: np.ndarray) -> np.ndarray:
        """User ids to user indexes (1..n_users); unknown ids give 0."""
        return lookup_user_indexes(self.user_ids, user_ids, self._user_lookup)

    def save(self, path: str | Path) -> None:
        """Write every array to one `.npz` file (no pickled objects)."""
        arrays = {field.name: getattr(self, field.name) for field in fields(self)}
        arrays["sparse_features"] = np.array(SPARSE_FEATURES)
        arrays["dense_features"] = np.array(DENSE_FEATURES)
        with open(path, "wb") as file:
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureTables:
        """Read tables written by `save`; fails when they were built for other feature columns."""
        with np.load(path, allow_pickle=False) as archive:
            saved_columns = (
                tuple(archive["sparse_features"].tolist()),
                tuple(archive["dense_features"].tolist()),
            )
            if saved_columns != (SPARSE_FEATURES, DENSE_FEATURES):
                raise ValueError(
                    f"{path}: tables were built for features {saved_columns}, "
                    f"this module computes {(SPARSE_FEATURES, DENSE_FEATURES)}"
                )
            return cls(**{field.name: archive[field.name] for field in fields(cls)})


def user_lookup(ids_by_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `lookup_user_indexes` searches: the ids ascending, and their positions."""
    order = np.argsort(ids_by_index, kind="stable")
    return ids_by_index[order], order


def lookup_user_indexes(
    ids_by_index: np.ndarray,
    user_ids: np.ndarray,
    lookup: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Position of each of `user_ids` in `ids_by_index` (unique ids) plus one; 0 for ids not
    in it. `lookup`: `user_lookup(ids_by_index)`, where the caller keeps it."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    if len(ids_by_index) == 0:
        return np.zeros(user_ids.shape, dtype=np.int64)
    ascending, order = user_lookup(ids_by_index) if lookup is None else lookup
    positions = np.minimum(np.searchsorted(ascending, user_ids), len(ascending) - 1)
    return np.where(ascending[positions] == user_ids, order[positions] + 1, 0).astype(np.int64)


def ranker_inputs(
    tables: FeatureTables,
    user_ids: np.ndarray | None,
    item_indexes: np.ndarray,
    retrieval_scores: np.ndarray,
    lexical_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of B users' N candidates: (sparse int64 [B, N, S], dense float32 [B, N, D]).

    `user_ids` int64 [B] (None: all users unknown), `item_indexes` int64 [B, N] with -1 for
    padding, `retrieval_scores` and `lexical_scores` (None: all 0) float32 [B, N]. Raises
    FeatureError for malformed inputs.
    """
    item_indexes = np.asarray(item_indexes)
    retrieval_scores = np.asarray(retrieval_scores)
    lexical_scores = (
        np.zeros(item_indexes.shape, np.float32)
        if lexical_scores is None
        else np.asarray(lexical_scores)
    )
    if item_indexes.ndim != 2:
        raise FeatureError(f"item indexes must be [batch, candidates], got {item_indexes.shape}")
    if not np.issubdtype(item_indexes.dtype, np.integer):
        raise FeatureError(f"item indexes must be integers, got {item_indexes.dtype}")
    for name, values in (("retrieval", retrieval_scores), ("lexical", lexical_scores)):
        if values.shape != item_indexes.shape:
            raise FeatureError(
                f"{name} scores {values.shape} and item indexes {item_indexes.shape} "
                "must have the same shape"
            )
    batch = item_indexes.shape[0]
    if user_ids is None:
        user_rows = np.zeros(batch, dtype=np.int64)
    else:
        user_ids = np.asarray(user_ids)
        if user_ids.shape != (batch,) or not np.issubdtype(user_ids.dtype, np.integer):
            raise FeatureError(f"user ids must be {batch} integers, got {user_ids.shape}")
        user_rows = tables.user_indexes(user_ids)

    out_of_range = (item_indexes < PADDING_ITEM) | (item_indexes >= tables.n_items)
    if out_of_range.any():
        bad = item_indexes[out_of_range][0]
        raise FeatureError(f"item index {bad} is outside 0..{tables.n_items - 1} (or -1)")
    item_rows = item_indexes.astype(np.int64) + 1
    is_candidate = item_rows > 0
    scores = np.where(is_candidate, retrieval_scores, 0).astype(np.float32)
    lexical = np.where(is_candidate, lexical_scores, 0).astype(np.float32)
    if not (np.isfinite(scores).all() and np.isfinite(lexical).all()):
        raise FeatureError("retrieval and lexical scores must be finite")

    category = tables.item_category[item_rows]
    user_grid = np.broadcast_to(user_rows[:, None], item_rows.shape)
    sparse = np.stack(
        [
            user_grid,
            item_rows,
            category,
            tables.item_brand[item_rows],
            tables.item_price_bucket[item_rows],
        ],
        axis=-1,
    ).astype(np.int64)

    item_percentile = tables.item_price_percentile[item_rows]
    price_gap = np.where(
        np.isnan(item_percentile), 0.0, item_percentile - tables.user_price_level[user_grid]
    )
    dense = np.stack(
        [
            scores,
            lexical,
            tables.item_log_popularity[item_rows],
            tables.user_category_affinity[user_grid, category],
            price_gap,
        ],
        axis=-1,
    ).astype(np.float32)
    return sparse, dense
