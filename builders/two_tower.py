"""Two-tower retrieval model for `recommend`, trained in PyTorch.

The user tower maps a user index (1..n_users; 0 = unknown user) to an L2-normalised embedding;
the item tower maps an item index, with its category and brand, to one in the same space, so
the retrieval score is a dot product (cosine). Training uses in-batch sampled softmax over the
training split of the interaction log, each interaction weighted by its event, with a log-Q
correction so that popular items are not over-penalised as in-batch negatives. A share of
training users is replaced by user 0, which so learns an embedding for cold-start users close
to what is popular overall.

With a `PrivacySpec` the towers train with DP-SGD (`builders.dp`, one user's events as the
privacy unit). The in-batch softmax would let one user's item act as every other example's
negative, and the log-Q correction reads item popularity off the log, so private training
scores each example against negatives drawn uniformly from the catalog instead, without
log-Q. Each user's own embedding row learns from that user's events only; the rest (item
embeddings, both towers' layers, the cold-start user) is what the guarantee covers.

The user tower is exported to ONNX (`user_id` INT64 [batch, 1] -> `user_embedding` FP32
[batch, dim]): the graph starts with a lookup of the user id in the training vocabulary
(ONNX-ML `LabelEncoder`, unknown ids give 0), so the served pipeline needs no Python step
for it. The item embeddings feed the retrieval index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from builders import dp
from builders.data import EVENT_WEIGHTS, Dataset, ids_by_user_index
from builders.progress import say
from builders.ranker import (
    ONNX_OPSET,
    TRAINING_THREADS,
    build_tables,
    check_parity,
    describe_metrics,
    torch_threads,
)
from builders.runtime.features import FeatureTables, lookup_user_indexes

#: Share of training interactions whose user is replaced by the unknown user 0.
COLD_START_SHARE = 0.1
TEMPERATURE = 0.1
FEATURE_DIM = 16
#: Largest allowed |ONNX - PyTorch| on the user embedding.
ONNX_ATOL = 1e-5
RECALL_AT = 10
#: Negatives per step of private training, drawn uniformly from the catalog.
PRIVATE_NEGATIVES = 128
#: Passes over the training events that fit each user's own row after private training.
USER_ROW_EPOCHS = 5


class UserTower(nn.Module):
    """user index [batch] -> L2-normalised embedding [batch, dim]."""

    def __init__(self, n_users: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_users + 1, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embedding(user_index))

    def encode(self, embedding: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.mlp(embedding), dim=-1)


class ItemTower(nn.Module):
    """item index [batch] -> L2-normalised embedding [batch, dim], from the item's id,
    category and brand embeddings."""

    def __init__(self, tables: FeatureTables, dim: int) -> None:
        super().__init__()
        # Row i + 1 of the tables is item index i (row 0 is the padding candidate).
        self.register_buffer("category", torch.from_numpy(tables.item_category[1:]))
        self.register_buffer("brand", torch.from_numpy(tables.item_brand[1:]))
        self.item = nn.Embedding(tables.n_items, dim)
        self.category_embedding = nn.Embedding(len(tables.category_names) + 1, FEATURE_DIM)
        self.brand_embedding = nn.Embedding(len(tables.brand_names) + 1, FEATURE_DIM)
        self.mlp = nn.Sequential(
            nn.Linear(dim + 2 * FEATURE_DIM, dim), nn.ReLU(), nn.Linear(dim, dim)
        )

    def forward(self, item_index: torch.Tensor) -> torch.Tensor:
        return self.encode(
            self.item(item_index),
            self.category_embedding(self.category[item_index]),
            self.brand_embedding(self.brand[item_index]),
        )

    def encode(self, item: torch.Tensor, category: torch.Tensor, brand: torch.Tensor):
        features = torch.cat([item, category, brand], dim=-1)
        return nn.functional.normalize(self.mlp(features), dim=-1)


class UserTowerExport(nn.Module):
    """The user tower as served: `user_index` [batch, 1] -> `user_embedding` [batch, dim]."""

    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        return self.tower(user_index.reshape(-1))


@dataclass
class TwoTowerResult:
    user_tower: UserTower
    item_tower: ItemTower
    user_ids: np.ndarray  # int64 [n_users], unique: user index = position + 1
    user_embeddings: np.ndarray  # float32 [n_users + 1, dim]; row 0: unknown user
    item_embeddings: np.ndarray  # float32 [n_items, dim]; row = item index
    metrics: dict[str, float] = field(default_factory=dict)
    privacy: dp.PrivacyPlan | None = None  # None: trained without DP

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """Retrieval scores float32 [len(user_ids), n_items]; unknown ids score as user 0."""
        indexes = lookup_user_indexes(self.user_ids, user_ids)
        return self.user_embeddings[indexes] @ self.item_embeddings.T

    def retrieval_scores(self, contexts: pd.DataFrame) -> np.ndarray:
        """Scores of every item for each row's user (a `ranker.RetrievalScores` callable)."""
        return self.scores(contexts["user_id"].to_numpy(np.int64))


def train(
    dataset: Dataset,
    *,
    dim: int = 64,
    epochs: int = 10,
    batch_size: int = 512,
    learning_rate: float = 5e-3,
    seed: int = 0,
    progress: bool = True,
    privacy: dp.PrivacySpec | None = None,
) -> TwoTowerResult:
    """Train both towers on `dataset.split().train` and measure recall@10 on its test part;
    with `privacy`, by DP-SGD (`train_private`)."""
    if not dataset.has_interactions:
        raise ValueError(f"{dataset.name}: the two-tower model needs an interaction log")
    started = time.perf_counter()
    torch.manual_seed(seed)
    tables = build_tables(dataset)
    split = dataset.split()
    users = torch.from_numpy(tables.user_indexes(split.train["user_id"].to_numpy()))
    items = torch.from_numpy(np.searchsorted(tables.item_ids, split.train["item_id"].to_numpy()))
    weights = torch.from_numpy(split.train["event"].map(EVENT_WEIGHTS).to_numpy(np.float32))
    # log-Q correction: an item's share of the weighted training interactions.
    item_share = torch.zeros(tables.n_items).index_add_(0, items, weights)
    log_item_share = torch.log(item_share / item_share.sum() + 1e-12)

    user_tower, item_tower = UserTower(tables.n_users, dim), ItemTower(tables, dim)
    parameters = [*user_tower.parameters(), *item_tower.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    plan = None
    with torch_threads(TRAINING_THREADS):
        if privacy is not None:
            plan = dp.plan(privacy, len(torch.unique(users)), epochs)
            towers = Towers(user_tower, item_tower)
            train_private(towers, users, items, weights, plan, optimizer, seed, progress)
            fit_user_rows(towers, users, items, weights, batch_size, learning_rate, seed)
        for epoch in range(epochs if privacy is None else 0):
            epoch_started, total = time.perf_counter(), 0.0
            order = torch.randperm(len(users), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                cold = torch.rand(len(batch), generator=generator) < COLD_START_SHARE
                batch_users = torch.where(cold, 0, users[batch])
                loss = in_batch_softmax_loss(
                    user_tower(batch_users),
                    item_tower(items[batch]),
                    items[batch],
                    weights[batch],
                    log_item_share,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            say(
                progress,
                f"two-tower epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f} "
                f"({time.perf_counter() - epoch_started:.1f} s)",
            )

    user_tower.eval()
    item_tower.eval()
    with torch.no_grad():
        # Users without training interactions were never trained: serve them as cold-start.
        untrained = torch.ones(tables.n_users + 1, dtype=torch.bool)
        untrained[users] = False
        user_tower.embedding.weight[untrained] = user_tower.embedding.weight[0].clone()
        user_embeddings = user_tower(torch.arange(tables.n_users + 1)).numpy()
        item_embeddings = item_tower(torch.arange(tables.n_items)).numpy()
    result = TwoTowerResult(
        user_tower, item_tower, tables.user_ids, user_embeddings, item_embeddings, privacy=plan
    )
    result.metrics = evaluate(result, dataset)
    result.metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    say(progress, f"two-tower: {describe_metrics(result.metrics)}")
    return result


class Towers(nn.Module):
    """Both towers as one module, scoring one example from its looked-up rows."""

    #: Embedding tables a private example reads rows of (`dp.Lookup`).
    USER_TABLE = "user.embedding.weight"
    ITEM_TABLES = (
        "item.item.weight",
        "item.category_embedding.weight",
        "item.brand_embedding.weight",
    )

    def __init__(self, user: UserTower, item: ItemTower) -> None:
        super().__init__()
        self.user, self.item = user, item

    def forward(self, user, item, category, brand, same_item, weight) -> torch.Tensor:
        """Weighted softmax loss of candidate 0 (the positive) against the others."""
        logits = self.item.encode(item, category, brand) @ self.user.encode(user)[0]
        logits = (logits / TEMPERATURE).masked_fill(same_item, -1e9)
        return weight * (torch.logsumexp(logits, 0) - logits[0])


def train_private(
    towers: Towers,
    users: torch.Tensor,
    items: torch.Tensor,
    weights: torch.Tensor,
    plan: dp.PrivacyPlan,
    optimizer: torch.optim.Optimizer,
    seed: int,
    progress: bool,
) -> None:
    """DP-SGD over the training interactions (user index, item index, event weight)."""
    generator = torch.Generator().manual_seed(seed)
    item_tower = towers.item

    def example_loss(params, vectors, same_item, weight):
        return torch.func.functional_call(towers, params, (*vectors, same_item, weight))

    started = time.perf_counter()
    for step, batch in enumerate(dp.user_batches(users.numpy(), plan, seed)):
        if not len(batch):
            continue
        batch = torch.from_numpy(batch)
        cold = torch.rand(len(batch), generator=generator) < COLD_START_SHARE
        negatives = torch.randint(
            item_tower.item.num_embeddings, (PRIVATE_NEGATIVES,), generator=generator
        )
        candidates = torch.cat([items[batch, None], negatives.expand(len(batch), -1)], dim=1)
        same_item = candidates == candidates[:, :1]
        same_item[:, 0] = False
        lookups = [
            dp.Lookup(Towers.USER_TABLE, torch.where(cold, 0, users[batch])[:, None], True),
            dp.Lookup(Towers.ITEM_TABLES[0], candidates),
            dp.Lookup(Towers.ITEM_TABLES[1], item_tower.category[candidates]),
            dp.Lookup(Towers.ITEM_TABLES[2], item_tower.brand[candidates]),
        ]
        optimizer.zero_grad()
        dp.private_step(
            towers,
            example_loss,
            lookups,
            (same_item, weights[batch]),
            users[batch],
            plan,
            generator,
        )
        optimizer.step()
        if (step + 1) % max(1, plan.steps // 5) == 0:
            say(
                progress,
                f"two-tower DP step {step + 1}/{plan.steps} "
                f"({time.perf_counter() - started:.1f} s)",
            )


def fit_user_rows(
    towers: Towers,
    users: torch.Tensor,
    items: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> None:
    """Fit each user's own embedding row to that user's events against the (private, now
    fixed) rest of the model, by softmax over the whole catalog. The loss is a sum, so a
    row's gradient reads only its own user's events."""
    with torch.no_grad():
        item_embeddings = towers.item(torch.arange(towers.item.item.num_embeddings))
    rows = towers.user.embedding.weight
    optimizer = torch.optim.Adam([rows], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(USER_ROW_EPOCHS):
        order = torch.randperm(len(users), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = towers.user.encode(rows[users[batch]]) @ item_embeddings.T / TEMPERATURE
            losses = nn.functional.cross_entropy(logits, items[batch], reduction="none")
            optimizer.zero_grad()
            (losses * weights[batch]).sum().backward()
            optimizer.step()
    towers.zero_grad()


def in_batch_softmax_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    item_indexes: torch.Tensor,
    weights: torch.Tensor,
    log_item_share: torch.Tensor,
) -> torch.Tensor:
    """Weighted softmax of each user's own item against the other items of the batch."""
    logits = users @ items.T / TEMPERATURE - log_item_share[item_indexes]
    # The same item elsewhere in the batch is not a negative.
    same_item = item_indexes[:, None] == item_indexes[None, :]
    others = ~torch.eye(len(item_indexes), dtype=torch.bool)
    logits = logits.masked_fill(same_item & others, -1e9)
    targets = torch.arange(len(item_indexes))
    losses = nn.functional.cross_entropy(logits, targets, reduction="none")
    return (losses * weights).sum() / weights.sum()


def evaluate(result: TwoTowerResult, dataset: Dataset) -> dict[str, float]:
    """Recall@10 of each user's held-out interaction, against event-weighted popularity in the
    training split. Both rank only items the user has not interacted with in training."""
    split = dataset.split()
    item_ids = dataset.catalog["item_id"].to_numpy()
    test_users = split.test["user_id"].to_numpy()  # sorted, one row per user
    held_out = np.searchsorted(item_ids, split.test["item_id"].to_numpy())
    # Row in test_users of each training interaction's user; -1 when not a test user.
    train_rows = lookup_user_indexes(test_users, split.train["user_id"].to_numpy()) - 1
    train_items = np.searchsorted(item_ids, split.train["item_id"].to_numpy())
    weights = split.train["event"].map(EVENT_WEIGHTS)
    popularity = weights.groupby(split.train["item_id"]).sum().reindex(item_ids, fill_value=0)
    hits = {"recall_at_10": 0, "popularity_recall_at_10": 0}
    chunk_size = max(1, 2**24 // len(item_ids))
    for start in range(0, len(test_users), chunk_size):
        users = test_users[start : start + chunk_size]
        seen = np.zeros((len(users), len(item_ids)), dtype=bool)
        mine = (train_rows >= start) & (train_rows < start + len(users))
        seen[train_rows[mine] - start, train_items[mine]] = True
        for name, scores in (
            ("recall_at_10", result.scores(users)),
            ("popularity_recall_at_10", np.broadcast_to(popularity.to_numpy(), seen.shape)),
        ):
            top = top_items(np.where(seen, -np.inf, scores), RECALL_AT)
            held_out_items = held_out[start : start + len(users), None]
            hits[name] += int((top == held_out_items).any(axis=1).sum())
    recalls = {
        name: count / len(test_users) if len(test_users) else float("nan")
        for name, count in hits.items()
    }
    return {**recalls, "test_users": len(test_users)}


def top_items(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k best-scoring items per row, best first."""
    k = min(k, scores.shape[1])
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def export_user_tower(result: TwoTowerResult, path: str | Path) -> dict:
    """Write the user tower, with its user-id lookup, as ONNX and check every user's
    embedding (and an unknown user's) against PyTorch."""
    model = UserTowerExport(result.user_tower).eval()
    all_users = torch.arange(len(result.user_embeddings)).reshape(-1, 1)
    torch.onnx.export(
        model,
        (all_users[:2],),
        str(path),
        input_names=["user_index"],
        output_names=["user_embedding"],
        dynamic_axes={"user_index": {0: "batch"}, "user_embedding": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    onnx.save(with_user_lookup(onnx.load(str(path)), result.user_ids), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(["user_embedding"], {"user_id": ids_by_user_index(result.user_ids)})
    with torch.no_grad():
        expected = model(all_users).numpy()
    parity = check_parity(
        "ONNX user tower vs PyTorch", float(np.abs(exported - expected).max()), ONNX_ATOL
    )
    return {**parity, "users": len(all_users)}


def with_user_lookup(tower: onnx.ModelProto, user_ids: np.ndarray) -> onnx.ModelProto:
    """The tower graph with input `user_id` instead of `user_index`: `user_ids[i]` becomes
    index i + 1, any other id 0 (the cold-start user)."""
    graph = tower.graph
    (index_input,) = graph.input
    user_id = onnx.helper.make_tensor_value_info("user_id", onnx.TensorProto.INT64, ["batch", 1])
    lookup = onnx.helper.make_node(
        "LabelEncoder",
        ["user_id"],
        [index_input.name],
        domain="ai.onnx.ml",
        keys_int64s=[int(u) for u in user_ids],
        values_int64s=list(range(1, len(user_ids) + 1)),
        default_int64=0,
    )
    graph.node.insert(0, lookup)
    graph.input.remove(index_input)
    graph.input.append(user_id)
    tower.opset_import.append(onnx.helper.make_opsetid("ai.onnx.ml", 2))
    onnx.checker.check_model(tower)
    return tower
