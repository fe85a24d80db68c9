"""CTR ranker (DCN-v2), trained twice on the same examples: PyTorch -> ONNX, Keras -> SavedModel.

The model scores every candidate of a [batch, N] list from the `sparse` [batch, N, S] and
`dense` [batch, N, D] tensors of `builders.runtime.features`; both leading dimensions are
dynamic, and the output `score` [batch, N] is a click probability.

Recommend examples (`train`): each click, add-to-cart or purchase in the training split is a
group of one positive and `negatives` negatives, half drawn from the top retrieved items the
user never engaged with, half at random by popularity.

Search examples (`train_search`): each logged search session is a group of the items it
saw, labelled by what it engaged with, with the dense and lexical scores the served
retrieval stages give them for its query (the dense ones with the teacher embedding the
query, whichever query student serves: `builders.build.search_scores`). Only seen items
count: whether an item was seen depends first on where the logged engine showed it
(position bias), so an unseen item says little about its relevance. A share of the groups
is built as for an unknown user (`UNKNOWN_USER_SHARE`), as anonymous searches are served.
Trained with PyTorch only: it is served as ONNX.

Every group goes through `ranker_inputs`, the function the `features` model serves, so
training and serving features are the same.

With a `PrivacySpec` the PyTorch ranker trains with DP-SGD (`builders.dp`, one user's groups
as the privacy unit; the user's own embedding row is personal), and the Keras ranker takes
its weights instead of training on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from builders import dp
from builders.data import EVENT_WEIGHTS, Dataset, user_vocabulary
from builders.progress import say
from builders.runtime.features import (
    DENSE_FEATURES,
    NUM_DENSE,
    NUM_SPARSE,
    PRICE_BUCKETS,
    SPARSE_FEATURES,
    FeatureTables,
    ranker_inputs,
)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # SavedModel export needs it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

#: Events that count as a positive (engaged) example.
POSITIVE_EVENTS = ("click", "add_to_cart", "purchase")
#: Hard negatives come from this many top retrieved items.
RETRIEVAL_DEPTH = 50
#: Shrinks a user's category shares and price level towards everybody's (in interactions).
PRIOR_INTERACTIONS = 5.0
EMBEDDING_DIM = 8
CROSS_LAYERS = 2
DEEP_UNITS = (64, 32)
#: Largest allowed |export - source framework| on the `score` output.
ONNX_ATOL = 1e-5
SAVEDMODEL_ATOL = 1e-5
ONNX_OPSET = 17
ALL_FEATURES = (*SPARSE_FEATURES, *DENSE_FEATURES)
#: What the search ranker reads: the query-dependent scores only. Measured on the synthetic
#: data (2026-12-02): trained on the same clicks, the item, category and brand embeddings,
#: popularity and the user's affinities learn how often an item is clicked whatever the
#: query, and served NDCG@10 fell from 0.88 to 0.64; see perf/README.md.
SEARCH_RANKER_FEATURES = ("retrieval_score", "lexical_score")
#: Most candidates of one search session in a training group.
SEARCH_GROUP_SIZE = 8
#: Share of search groups whose features are built for an unknown user.
UNKNOWN_USER_SHARE = 0.25
#: A user id no vocabulary holds: features for an unknown user.
_UNKNOWN_USER_ID = -1
#: Torch threads while training: the models are small, so one thread is as fast as two and,
#: unlike two, does not stall when other processes share the cores.
TRAINING_THREADS = 1

#: Retrieval scores of every item for each example's context (a row of the interaction log:
#: user_id, item_id, query, ...): a callable returning float32 [rows, n_items], or a matrix
#: [n_users + 1, n_items] indexed by user index (row 0: unknown user).
RetrievalScores = Callable[[pd.DataFrame], np.ndarray] | np.ndarray


@dataclass(frozen=True)
class SearchScores:
    """What the served retrieval stages score any item with for the logged queries: the
    dense score is `item_embeddings @ query_embeddings[row]`, the lexical one the item's
    BM25 over the query's best (`fusion.fuse`'s `lexical_scores`)."""

    queries: list[str]
    query_embeddings: np.ndarray  # float32 [Q, dim]
    item_embeddings: np.ndarray  # float32 [n_items, dim]
    lexical: Callable[[str], np.ndarray]  # query -> BM25 of every item, [n_items]


class ParityError(RuntimeError):
    """An exported model disagrees with its source framework beyond the declared tolerance."""


@dataclass(frozen=True)
class Examples:
    """Candidate groups: one positive and the negatives drawn for it, as served."""

    sparse: np.ndarray  # int64 [groups, N, S]
    dense: np.ndarray  # float32 [groups, N, D]
    labels: np.ndarray  # float32 [groups, N]
    weights: np.ndarray | None = None  # float32 [groups, N] loss weights; None: all 1
    owners: np.ndarray | None = None  # int64 [groups]: index of the user whose event it is

    @property
    def loss_weights(self) -> np.ndarray:
        return np.ones_like(self.labels) if self.weights is None else self.weights


@dataclass
class RankerResult:
    """Both trained rankers. `tables` (built from the whole log) are what the features model
    serves; training and evaluation used tables built from the training split only."""

    torch_model: DCNRanker
    keras_model: keras.Model | None  # None: trained with PyTorch only (`train_search`)
    tables: FeatureTables
    test_examples: Examples
    metrics: dict[str, float]
    privacy: dp.PrivacyPlan | None = None  # None: trained without DP


# --- feature tables -----------------------------------------------------------------------


def build_tables(dataset: Dataset, interactions: pd.DataFrame | None = None) -> FeatureTables:
    """Feature tables for `dataset`.

    Vocabularies (users, items, categories, brands) and price buckets come from the whole
    dataset; popularity, category affinities and price levels from `interactions` (default:
    the whole log), so a training split can build tables without its test rows.
    """
    catalog = dataset.catalog
    log = dataset.interactions if interactions is None else interactions
    user_ids = user_vocabulary(dataset)
    category_names = np.array(sorted(catalog["category"].unique()), dtype=str)
    brand_names = np.array(sorted(catalog["brand"].dropna().unique()), dtype=str)

    def padded(values: np.ndarray, padding: float) -> np.ndarray:
        return np.concatenate([[padding], values])

    item_category = np.searchsorted(category_names, catalog["category"].to_numpy(str)) + 1
    has_brand = catalog["brand"].notna().to_numpy()
    brands = catalog["brand"].fillna("").to_numpy(str)
    item_brand = np.where(has_brand, np.searchsorted(brand_names, brands) + 1, 0)
    percentile = catalog.groupby("category")["price"].rank(pct=True).to_numpy(np.float64)
    bucket = np.clip(np.ceil(np.nan_to_num(percentile) * PRICE_BUCKETS), 1, PRICE_BUCKETS)
    item_price_bucket = np.where(np.isnan(percentile), 0, bucket)

    n_items, n_users, n_categories = len(catalog), len(user_ids), len(category_names)
    popularity = np.zeros(n_items)
    affinity_counts = np.zeros((n_users + 1, n_categories + 1))
    price_sums = np.zeros(n_users + 1)
    price_weights = np.zeros(n_users + 1)
    if log is not None and len(log):
        items = np.searchsorted(catalog["item_id"].to_numpy(), log["item_id"].to_numpy())
        users = np.searchsorted(user_ids, log["user_id"].to_numpy()) + 1
        weights = log["event"].map(EVENT_WEIGHTS).to_numpy(np.float64)
        np.add.at(popularity, items, weights)
        np.add.at(affinity_counts, (users, item_category[items]), weights)
        priced = ~np.isnan(percentile[items])
        np.add.at(price_sums, users[priced], weights[priced] * percentile[items][priced])
        np.add.at(price_weights, users[priced], weights[priced])

    log_popularity = np.log1p(popularity)
    if log_popularity.max() > 0:
        log_popularity /= log_popularity.max()
    total = affinity_counts.sum()
    everybody_shares = affinity_counts.sum(axis=0) / total if total else np.zeros(n_categories + 1)
    user_totals = affinity_counts.sum(axis=1, keepdims=True)
    affinity = (affinity_counts + PRIOR_INTERACTIONS * everybody_shares) / (
        user_totals + PRIOR_INTERACTIONS
    )
    everybody_level = price_sums.sum() / price_weights.sum() if price_weights.sum() else 0.5
    price_level = (price_sums + PRIOR_INTERACTIONS * everybody_level) / (
        price_weights + PRIOR_INTERACTIONS
    )
    return FeatureTables(
        user_ids=user_ids,
        item_ids=catalog["item_id"].to_numpy(np.int64),
        item_category=padded(item_category, 0).astype(np.int64),
        item_brand=padded(item_brand, 0).astype(np.int64),
        item_price_bucket=padded(item_price_bucket, 0).astype(np.int64),
        item_price_percentile=padded(percentile, np.nan).astype(np.float32),
        item_log_popularity=padded(log_popularity, 0).astype(np.float32),
        user_category_affinity=affinity.astype(np.float32),
        user_price_level=price_level.astype(np.float32),
        category_names=category_names,
        brand_names=brand_names,
    )


# --- examples -------------------------------------------------------------------------------


def build_examples(
    tables: FeatureTables,
    contexts: pd.DataFrame,
    retrieval_scores: RetrievalScores,
    engaged: np.ndarray,
    *,
    negatives: int = 4,
    seed: int = 0,
) -> Examples:
    """One group per row of `contexts` (a positive interaction): the item, then negatives.

    `engaged` holds the `engaged_pairs` codes; a candidate among them is labelled 1 and never
    drawn as a hard negative.
    """
    rng = np.random.default_rng(seed)
    n_items = tables.n_items
    hard = negatives // 2
    if contexts.empty:
        groups = (0, negatives + 1)
        return Examples(
            np.zeros((*groups, NUM_SPARSE), np.int64),
            np.zeros((*groups, NUM_DENSE), np.float32),
            np.zeros(groups, np.float32),
        )
    popularity_weights = np.expm1(tables.item_log_popularity[1:].astype(np.float64)) + 1.0
    popularity_weights /= popularity_weights.sum()
    chunk_size = max(1, 2**22 // n_items)
    parts = []
    for start in range(0, len(contexts), chunk_size):
        chunk = contexts.iloc[start : start + chunk_size]
        scores = _all_item_scores(tables, retrieval_scores, chunk)
        user_ids = chunk["user_id"].to_numpy(np.int64)
        pair_base = tables.user_indexes(user_ids)[:, None] * n_items
        positives = np.searchsorted(tables.item_ids, chunk["item_id"].to_numpy())[:, None]
        depth = min(RETRIEVAL_DEPTH, n_items)
        retrieved = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        already_engaged = np.isin(pair_base + retrieved, engaged)
        priority = np.where(already_engaged, np.inf, rng.random(retrieved.shape))
        hard_negatives = np.take_along_axis(retrieved, np.argsort(priority, axis=1)[:, :hard], 1)
        drawn = rng.choice(n_items, size=(len(chunk), negatives), p=popularity_weights)
        # Without a retrieval signal (all scores equal) the "top" items are arbitrary.
        informative = (scores.max(axis=1) > scores.min(axis=1))[:, None]
        hard_negatives = np.where(informative, hard_negatives, drawn[:, :hard])
        random_negatives = drawn[:, hard:]
        candidates = np.concatenate([positives, hard_negatives, random_negatives], axis=1)
        sparse, dense = ranker_inputs(
            tables, user_ids, candidates, np.take_along_axis(scores, candidates, axis=1)
        )
        labels = np.isin(pair_base + candidates, engaged).astype(np.float32)
        labels[:, 0] = 1.0
        parts.append((sparse, dense, labels, tables.user_indexes(user_ids)))
    sparse, dense, labels, owners = (np.concatenate(arrays) for arrays in zip(*parts))
    return Examples(sparse, dense, labels, owners=owners)


def _all_item_scores(
    tables: FeatureTables, retrieval_scores: RetrievalScores, contexts: pd.DataFrame
) -> np.ndarray:
    if isinstance(retrieval_scores, np.ndarray):
        scores = retrieval_scores[tables.user_indexes(contexts["user_id"].to_numpy())]
    else:
        scores = np.asarray(retrieval_scores(contexts))
    if scores.shape != (len(contexts), tables.n_items):
        raise ValueError(
            f"retrieval scores must be [{len(contexts)}, {tables.n_items}], got {scores.shape}"
        )
    return scores.astype(np.float32)


def session_keys(log: pd.DataFrame) -> list[str]:
    """What identifies a session: `session_id` when the log has it, else user and query."""
    return ["session_id"] if "session_id" in log else ["user_id", "query"]


def search_sessions(log: pd.DataFrame) -> pd.core.groupby.DataFrameGroupBy:
    """The logged searches of `log`, grouped by session."""
    return log[log["query"].notna()].groupby(session_keys(log), sort=True)


def search_examples(
    tables: FeatureTables,
    log: pd.DataFrame,
    scores: SearchScores,
    *,
    group_size: int = SEARCH_GROUP_SIZE,
    seed: int = 0,
) -> Examples:
    """One group per search session of `log`: the items the session saw (its logged rows),
    labelled 1 when it engaged with them, with the retrieval scores the served stages give
    them for its query.

    Only seen items count: whether an item was seen depends first on where the logged engine
    showed it (position bias), so an unseen item says little about its relevance. A session
    that saw more than `group_size` items keeps a random `group_size` of them; padding
    (weight 0) fills the rest.
    """
    rng = np.random.default_rng(seed)
    row_of = {query: row for row, query in enumerate(scores.queries)}
    users, items, dense, lexical, labels = [], [], [], [], []
    for _, session in search_sessions(log):
        query = session["query"].iloc[0]
        seen = np.searchsorted(tables.item_ids, session["item_id"].to_numpy())
        engaged = session["event"].isin(POSITIVE_EVENTS).to_numpy()
        keep = rng.permutation(len(seen))[:group_size]
        seen, engaged = seen[keep], engaged[keep]
        width = len(seen)
        padded = np.full(group_size, -1)
        padded[:width] = seen
        query_dense, query_lexical = np.zeros((2, group_size), np.float32)
        query_dense[:width] = scores.item_embeddings[seen] @ scores.query_embeddings[row_of[query]]
        bm25 = scores.lexical(query)
        if bm25.max() > 0:
            query_lexical[:width] = bm25[seen] / bm25.max()
        label = np.zeros(group_size, np.float32)
        label[:width] = engaged
        users.append(session["user_id"].iloc[0])
        items.append(padded)
        dense.append(query_dense)
        lexical.append(query_lexical)
        labels.append(label)
    if not users:
        groups = (0, group_size)
        return Examples(
            np.zeros((*groups, NUM_SPARSE), np.int64),
            np.zeros((*groups, NUM_DENSE), np.float32),
            np.zeros(groups, np.float32),
            np.zeros(groups, np.float32),
        )
    user_ids = np.array(users, dtype=np.int64)
    owners = tables.user_indexes(user_ids)
    user_ids[rng.random(len(user_ids)) < UNKNOWN_USER_SHARE] = _UNKNOWN_USER_ID
    items = np.array(items)
    sparse, dense_features = ranker_inputs(
        tables, user_ids, items, np.array(dense), np.array(lexical)
    )
    weights = (items >= 0).astype(np.float32)
    return Examples(sparse, dense_features, np.array(labels), weights, owners)


def engaged_pairs(tables: FeatureTables, interactions: pd.DataFrame) -> np.ndarray:
    """Sorted `user_index * n_items + item_index` codes of the engaged (user, item) pairs."""
    engaged = interactions[interactions["event"].isin(POSITIVE_EVENTS)]
    users = tables.user_indexes(engaged["user_id"].to_numpy())
    items = np.searchsorted(tables.item_ids, engaged["item_id"].to_numpy())
    return np.unique(users * tables.n_items + items)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both labels."""
    labels, scores = np.ravel(labels) > 0.5, np.ravel(scores)
    n_positive, n_negative = labels.sum(), (~labels).sum()
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = pd.Series(scores).rank().to_numpy()
    return float(
        (ranks[labels].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    )


# --- models ---------------------------------------------------------------------------------


class CrossLayer(nn.Module):
    """DCN-v2 cross layer: x0 * (W x + b) + x."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCNRanker(nn.Module):
    """DCN-v2 (parallel): field embeddings and dense features -> cross network + MLP -> logit.

    Layers act on the last axis, so any [batch, N] candidate grid goes through unchanged.
    Columns not in `uses` are set to 0 inside the graph (a fixed mask), so a ranker can
    ignore features the shared `ranking_features` stage still serves.
    """

    def __init__(self, vocabulary_sizes: Sequence[int], uses: Sequence[str] = ALL_FEATURES) -> None:
        super().__init__()
        self.vocabulary_sizes = tuple(vocabulary_sizes)
        self.uses = tuple(uses)
        unknown = sorted(set(self.uses) - set(ALL_FEATURES))
        if unknown:
            raise ValueError(f"unknown ranker features {unknown}; features: {ALL_FEATURES}")
        self.register_buffer(
            "sparse_mask",
            torch.tensor([f in self.uses for f in SPARSE_FEATURES], dtype=torch.int64),
        )
        self.register_buffer(
            "dense_mask",
            torch.tensor([f in self.uses for f in DENSE_FEATURES], dtype=torch.float32),
        )
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, EMBEDDING_DIM) for size in self.vocabulary_sizes
        )
        for embedding in self.embeddings:
            nn.init.uniform_(embedding.weight, -0.05, 0.05)
        width = len(self.vocabulary_sizes) * EMBEDDING_DIM + NUM_DENSE
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(CROSS_LAYERS))
        deep: list[nn.Module] = []
        for units_in, units in zip((width, *DEEP_UNITS), DEEP_UNITS):
            deep += [nn.Linear(units_in, units), nn.ReLU()]
        self.deep = nn.Sequential(*deep)
        self.head = nn.Linear(width + DEEP_UNITS[-1], 1)

    def logits(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        sparse = sparse * self.sparse_mask
        fields = [embedding(sparse[..., i]) for i, embedding in enumerate(self.embeddings)]
        return self.from_fields(fields, dense)

    def from_fields(self, fields: Sequence[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        """Logits from the looked-up field embeddings and the (unmasked) dense features."""
        x0 = torch.cat([*fields, dense * self.dense_mask], dim=-1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(sparse, dense))


def build_keras_model(vocabulary_sizes: Sequence[int]) -> keras.Model:
    """The same DCN-v2 in Keras: inputs `sparse` and `dense`, output `score`."""
    sparse = keras.Input(shape=(None, len(vocabulary_sizes)), dtype="int64", name="sparse")
    dense = keras.Input(shape=(None, NUM_DENSE), dtype="float32", name="dense")
    fields = [
        keras.layers.Embedding(size, EMBEDDING_DIM, name=f"embedding_{i}")(sparse[..., i])
        for i, size in enumerate(vocabulary_sizes)
    ]
    x0 = keras.layers.Concatenate(name="x0")([*fields, dense])
    width = len(vocabulary_sizes) * EMBEDDING_DIM + NUM_DENSE
    x = x0
    for i in range(CROSS_LAYERS):
        projected = keras.layers.Dense(width, name=f"cross_{i}")(x)
        x = keras.layers.Add()([keras.layers.Multiply()([x0, projected]), x])
    deep = x0
    for i, units in enumerate(DEEP_UNITS):
        deep = keras.layers.Dense(units, activation="relu", name=f"deep_{i}")(deep)
    logit = keras.layers.Dense(1, name="head")(keras.layers.Concatenate()([x, deep]))
    score = keras.layers.Activation("sigmoid", name="score")(keras.ops.squeeze(logit, axis=-1))
    return keras.Model({"sparse": sparse, "dense": dense}, {"score": score}, name="ranker")


# --- training -------------------------------------------------------------------------------


def recommend_training_examples(
    dataset: Dataset, retrieval_scores: RetrievalScores, *, negatives: int = 4, seed: int = 0
) -> tuple[FeatureTables, Examples, Examples]:
    """The recommend ranker's training and held-out groups (`dataset.split()`), with the
    tables of the training split that built them."""
    if not dataset.has_interactions:
        raise ValueError(f"{dataset.name}: the ranker needs an interaction log")
    if negatives < 2:
        raise ValueError(f"negatives must be at least 2, got {negatives}")
    split = dataset.split()
    tables = build_tables(dataset, split.train)
    engaged = engaged_pairs(tables, dataset.interactions)

    def examples_of(log: pd.DataFrame, example_seed: int) -> Examples:
        contexts = log[log["event"].isin(POSITIVE_EVENTS)].reset_index(drop=True)
        return build_examples(
            tables, contexts, retrieval_scores, engaged, negatives=negatives, seed=example_seed
        )

    return tables, examples_of(split.train, seed), examples_of(split.test, seed + 1)


def search_training_examples(
    dataset: Dataset, search_scores: Callable[[list[str]], SearchScores], *, seed: int = 0
) -> tuple[FeatureTables, Examples, Examples]:
    """The search ranker's training and held-out session groups (sessions with a row in
    `dataset.split()`'s test part are held out), with the tables of the training split."""
    if not dataset.has_interactions:
        raise ValueError(f"{dataset.name}: the ranker needs an interaction log")
    split = dataset.split()
    tables = build_tables(dataset, split.train)
    log = dataset.interactions
    queries = sorted(log["query"].dropna().unique().tolist())
    if not queries:
        raise ValueError(f"{dataset.name}: the search ranker needs logged searches")
    scores = search_scores(queries)
    keys = session_keys(log)
    held_out = log.set_index(keys).index.isin(split.test.set_index(keys).index)
    return (
        tables,
        search_examples(tables, log[~held_out], scores, seed=seed),
        search_examples(tables, log[held_out], scores, seed=seed + 1),
    )


def train(
    dataset: Dataset,
    retrieval_scores: RetrievalScores,
    *,
    negatives: int = 4,
    epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    privacy: dp.PrivacySpec | None = None,
) -> RankerResult:
    """Train the PyTorch and the Keras ranker on the same examples and measure held-out AUC
    (with `privacy`: the PyTorch one by DP-SGD, and the Keras one takes its weights).

    Training and test groups come from `dataset.split()`; `retrieval_scores` should come from
    a model trained on that split's training part (as `two_tower.train` does).
    """
    started = time.perf_counter()
    tables, train_examples, test_examples = recommend_training_examples(
        dataset, retrieval_scores, negatives=negatives, seed=seed
    )
    return _fit(
        dataset,
        tables,
        train_examples,
        test_examples,
        keras_too=True,
        started=started,
        progress=progress,
        privacy=privacy,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )


def train_search(
    dataset: Dataset,
    search_scores: Callable[[list[str]], SearchScores],
    *,
    epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    privacy: dp.PrivacySpec | None = None,
) -> RankerResult:
    """Train the search ranker (PyTorch) on what the logged search sessions saw, scored as
    the served retrieval stages score it (`search_scores`, see `search_examples`); with
    `privacy`, by DP-SGD.

    Sessions with a row in `dataset.split()`'s test part are the test groups, the others
    the training groups.
    """
    started = time.perf_counter()
    tables, train_examples, test_examples = search_training_examples(
        dataset, search_scores, seed=seed
    )
    return _fit(
        dataset,
        tables,
        train_examples,
        test_examples,
        keras_too=False,
        uses=SEARCH_RANKER_FEATURES,
        started=started,
        progress=progress,
        privacy=privacy,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )


def fit(
    dataset: Dataset,
    tables: FeatureTables,
    train_examples: Examples,
    test_examples: Examples,
    *,
    keras_too: bool,
    uses: Sequence[str] = ALL_FEATURES,
    seed: int = 0,
    privacy: dp.PrivacySpec | None = None,
) -> RankerResult:
    """Train DCN-v2 with the default settings on groups made by `search_training_examples` or
    `recommend_training_examples`, as `train_search` and `train` do (with `privacy`, by
    DP-SGD)."""
    return _fit(
        dataset,
        tables,
        train_examples,
        test_examples,
        keras_too=keras_too,
        started=time.perf_counter(),
        progress=True,
        uses=uses,
        privacy=privacy,
        epochs=4,
        batch_size=128,
        learning_rate=2e-3,
        seed=seed,
    )


def _fit(
    dataset: Dataset,
    tables: FeatureTables,
    train_examples: Examples,
    test_examples: Examples,
    *,
    keras_too: bool,
    started: float,
    progress: bool,
    uses: Sequence[str] = ALL_FEATURES,
    privacy: dp.PrivacySpec | None = None,
    **settings,
) -> RankerResult:
    """Train on `train_examples` (PyTorch, and Keras when asked) and measure held-out AUC."""
    if len(train_examples.labels) == 0:
        raise ValueError(f"{dataset.name}: no {'/'.join(POSITIVE_EVENTS)} events to learn from")
    group = train_examples.labels.shape[1]
    say(
        progress,
        f"ranker: {len(train_examples.labels):,} training and {len(test_examples.labels):,} "
        f"test groups of {group} candidates ({time.perf_counter() - started:.1f} s)",
    )
    plan = None
    if privacy is None:
        torch_model = train_torch(
            tables.vocabulary_sizes, train_examples, uses=uses, progress=progress, **settings
        )
        keras_model = (
            train_keras(tables.vocabulary_sizes, train_examples, progress=progress, **settings)
            if keras_too
            else None
        )
    else:
        torch_model, plan = train_torch_private(
            tables.vocabulary_sizes,
            train_examples,
            privacy,
            uses=uses,
            progress=progress,
            **settings,
        )
        keras_model = keras_from_torch(torch_model) if keras_too else None
    real = test_examples.loss_weights > 0  # padding candidates are not examples

    def held_out_auc(scores: Callable[[Examples], np.ndarray]) -> float:
        if len(test_examples.labels) == 0:
            return float("nan")
        return auc(test_examples.labels[real], scores(test_examples)[real])

    metrics = {"torch_auc": held_out_auc(partial(predict_torch, torch_model))}
    if keras_model is not None:
        metrics["keras_auc"] = held_out_auc(partial(predict_keras, keras_model))
    metrics |= {
        "retrieval_score_auc": held_out_auc(lambda examples: examples.dense[..., 0]),
        "lexical_score_auc": held_out_auc(lambda examples: examples.dense[..., 1]),
        "popularity_auc": held_out_auc(lambda examples: examples.dense[..., 2]),
        "train_groups": len(train_examples.labels),
        "test_groups": len(test_examples.labels),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    say(progress, f"ranker: {describe_metrics(metrics)}")
    return RankerResult(
        torch_model, keras_model, build_tables(dataset), test_examples, metrics, plan
    )


def train_torch(
    vocabulary_sizes: Sequence[int],
    examples: Examples,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    uses: Sequence[str] = ALL_FEATURES,
    progress: bool = True,
) -> DCNRanker:
    torch.manual_seed(seed)
    model = DCNRanker(vocabulary_sizes, uses)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_function = nn.BCEWithLogitsLoss(reduction="none")
    sparse, dense = torch.from_numpy(examples.sparse), torch.from_numpy(examples.dense)
    labels = torch.from_numpy(examples.labels)
    weights = torch.from_numpy(examples.loss_weights)
    shuffler = torch.Generator().manual_seed(seed)
    model.train()
    with torch_threads(TRAINING_THREADS):
        for epoch in range(epochs):
            started, total = time.perf_counter(), 0.0
            order = torch.randperm(len(labels), generator=shuffler)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                losses = loss_function(model.logits(sparse[batch], dense[batch]), labels[batch])
                loss = (losses * weights[batch]).sum() / weights[batch].sum().clamp(min=1e-6)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            say(
                progress,
                f"ranker (torch) epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f} "
                f"({time.perf_counter() - started:.1f} s)",
            )
    return model.eval()


class _GroupLoss(nn.Module):
    """A ranker's weighted log loss of one candidate group, from its looked-up fields."""

    def __init__(self, model: DCNRanker) -> None:
        super().__init__()
        self.model = model

    def forward(self, *fields_and_group: torch.Tensor) -> torch.Tensor:
        *fields, dense, labels, weights = fields_and_group
        logits = self.model.from_fields(fields, dense)
        losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return (losses * weights).sum()


def train_torch_private(
    vocabulary_sizes: Sequence[int],
    examples: Examples,
    privacy: dp.PrivacySpec,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    uses: Sequence[str] = ALL_FEATURES,
    progress: bool = True,
) -> tuple[DCNRanker, dp.PrivacyPlan]:
    """DP-SGD over the groups of `examples` (their `owners` are the privacy units);
    `batch_size` is unused: each step takes the groups of the users it samples."""
    if examples.owners is None:
        raise ValueError("private training needs the examples' owners")
    del batch_size
    torch.manual_seed(seed)
    model = DCNRanker(vocabulary_sizes, uses)
    loss = _GroupLoss(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    plan = dp.plan(privacy, len(np.unique(examples.owners)), epochs)
    generator = torch.Generator().manual_seed(seed)
    sparse = torch.from_numpy(examples.sparse) * model.sparse_mask
    dense, labels = torch.from_numpy(examples.dense), torch.from_numpy(examples.labels)
    weights = torch.from_numpy(examples.loss_weights)
    owners = torch.from_numpy(examples.owners)
    tables = [f"model.embeddings.{i}.weight" for i in range(len(vocabulary_sizes))]

    def example_loss(params, vectors, *group):
        return torch.func.functional_call(loss, params, (*vectors, *group))

    started = time.perf_counter()
    model.train()
    with torch_threads(TRAINING_THREADS):
        for step, batch in enumerate(dp.user_batches(examples.owners, plan, seed)):
            if not len(batch):
                continue
            lookups = [
                dp.Lookup(table, sparse[batch, :, i], SPARSE_FEATURES[i] == "user")
                for i, table in enumerate(tables)
            ]
            group = (dense[batch], labels[batch], weights[batch])
            optimizer.zero_grad()
            dp.private_step(loss, example_loss, lookups, group, owners[batch], plan, generator)
            optimizer.step()
            if (step + 1) % max(1, plan.steps // 5) == 0:
                say(
                    progress,
                    f"ranker (torch, DP) step {step + 1}/{plan.steps} "
                    f"({time.perf_counter() - started:.1f} s)",
                )
    return model.eval(), plan


def keras_from_torch(model: DCNRanker) -> keras.Model:
    """The Keras ranker with the weights of a PyTorch one that uses every feature."""
    if model.uses != ALL_FEATURES:
        raise ValueError("only a ranker that uses every feature has a Keras twin")
    keras_model = build_keras_model(model.vocabulary_sizes)

    def dense_layer(name: str, linear: nn.Linear) -> None:
        kernel = linear.weight.detach().numpy().T
        keras_model.get_layer(name).set_weights([kernel, linear.bias.detach().numpy()])

    for i, embedding in enumerate(model.embeddings):
        keras_model.get_layer(f"embedding_{i}").set_weights([embedding.weight.detach().numpy()])
    for i, layer in enumerate(model.cross):
        dense_layer(f"cross_{i}", layer.linear)
    for i, linear in enumerate(m for m in model.deep if isinstance(m, nn.Linear)):
        dense_layer(f"deep_{i}", linear)
    dense_layer("head", model.head)
    return keras_model


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_keras(
    vocabulary_sizes: Sequence[int],
    examples: Examples,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool = True,
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_keras_model(vocabulary_sizes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss={"score": "binary_crossentropy"}
    )
    model.fit(
        {"sparse": examples.sparse, "dense": examples.dense},
        {"score": examples.labels},
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: say(
                    progress, f"ranker (keras) epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}"
                )
            )
        ],
    )
    return model


def torch_scores(model: DCNRanker) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The model's scores for `sparse`, `dense` grids [groups, N, ·] (what a search ranker
    orders candidates by, e.g. `builders.build.served_search`)."""

    def score(sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(sparse), torch.from_numpy(dense)).numpy()

    return score


def predict_torch(model: DCNRanker, examples: Examples) -> np.ndarray:
    return torch_scores(model)(examples.sparse, examples.dense)


def predict_keras(model: keras.Model, examples: Examples) -> np.ndarray:
    inputs = {"sparse": examples.sparse, "dense": examples.dense}
    return model.predict(inputs, batch_size=4096, verbose=0)["score"]


# --- export ---------------------------------------------------------------------------------


def parity_inputs(vocabulary_sizes: Sequence[int], seed: int = 0) -> list[Examples]:
    """Random in-vocabulary inputs of two shapes, to check exports on any batch and N."""
    rng = np.random.default_rng(seed)
    samples = []
    for batch, candidates in ((3, 7), (1, 64)):
        sparse = np.stack(
            [rng.integers(0, size, (batch, candidates)) for size in vocabulary_sizes], axis=-1
        )
        dense = rng.normal(size=(batch, candidates, NUM_DENSE)).astype(np.float32)
        samples.append(
            Examples(sparse.astype(np.int64), dense, np.zeros((batch, candidates), np.float32))
        )
    return samples


def export_onnx(model: DCNRanker, path: str | Path) -> dict:
    """Write `model.onnx` (inputs `sparse` INT64 [batch, N, S], `dense` FP32 [batch, N, D];
    output `score` FP32 [batch, N]) and check it against PyTorch within ONNX_ATOL."""
    model = model.eval()
    samples = parity_inputs(model.vocabulary_sizes)
    example = (torch.from_numpy(samples[0].sparse), torch.from_numpy(samples[0].dense))
    torch.onnx.export(
        model,
        example,
        str(path),
        input_names=["sparse", "dense"],
        output_names=["score"],
        dynamic_axes={
            "sparse": {0: "batch", 1: "candidates"},
            "dense": {0: "batch", 1: "candidates"},
            "score": {0: "batch", 1: "candidates"},
        },
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    differences = []
    for sample in samples:
        (exported,) = session.run(["score"], {"sparse": sample.sparse, "dense": sample.dense})
        differences.append(np.abs(exported - predict_torch(model, sample)).max())
    result = check_parity("ONNX ranker vs PyTorch", float(max(differences)), ONNX_ATOL)
    return {**result, "shapes": [list(sample.labels.shape) for sample in samples]}


def export_saved_model(model: keras.Model, path: str | Path) -> dict:
    """Write a SavedModel (signature `serving_default`: `sparse`, `dense` -> `score`) and check
    the reloaded signature against Keras within SAVEDMODEL_ATOL."""
    model.export(str(path), format="tf_saved_model", verbose=False)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    inputs, outputs = sorted(input_specs), sorted(signature.structured_outputs)
    if inputs != ["dense", "sparse"] or outputs != ["score"]:
        raise ParityError(
            f"SavedModel signature is {inputs} -> {outputs}, expected sparse, dense -> score"
        )
    samples = parity_inputs(
        [model.get_layer(f"embedding_{i}").input_dim for i in range(NUM_SPARSE)]
    )
    differences = []
    for sample in samples:
        served = signature(sparse=tf.constant(sample.sparse), dense=tf.constant(sample.dense))
        differences.append(np.abs(served["score"].numpy() - predict_keras(model, sample)).max())
    result = check_parity("SavedModel ranker vs Keras", float(max(differences)), SAVEDMODEL_ATOL)
    shapes = [list(sample.labels.shape) for sample in samples]
    return {**result, "shapes": shapes, "inputs": inputs, "outputs": outputs}


def check_parity(what: str, max_abs_diff: float, atol: float) -> dict:
    """Raise ParityError when `max_abs_diff` exceeds `atol`; otherwise describe the check."""
    if not max_abs_diff <= atol:
        raise ParityError(f"{what}: max |difference| {max_abs_diff:.3g} exceeds {atol:g}")
    return {"max_abs_diff": max_abs_diff, "atol": atol}


def describe_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
    )
