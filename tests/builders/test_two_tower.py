"""The two-tower model: it learns, it serves cold-start users, and its ONNX user tower matches."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import two_tower
from builders.data import Dataset, load_dataset
from builders.two_tower import ONNX_ATOL, TwoTowerResult, export_user_tower, top_items

DIM = 32


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset("synthetic", n_items=2000, n_users=500)


@pytest.fixture(scope="module")
def result(dataset: Dataset) -> TwoTowerResult:
    return two_tower.train(dataset, dim=DIM, progress=False)


def test_embeddings_are_normalised_rows_per_index(result, dataset):
    assert result.item_embeddings.shape == (len(dataset.catalog), DIM)
    assert result.item_embeddings.dtype == np.float32
    assert result.user_embeddings.shape == (len(result.user_ids) + 1, DIM)
    np.testing.assert_allclose(np.linalg.norm(result.item_embeddings, axis=1), 1.0, rtol=1e-5)


def test_beats_popularity_on_synthetic(result):
    metrics = result.metrics
    assert metrics["test_users"] > 400
    assert metrics["recall_at_10"] > 1.5 * metrics["popularity_recall_at_10"]


def test_beats_popularity_on_movielens():
    metrics = two_tower.train(load_dataset("movielens-100k"), dim=DIM, progress=False).metrics
    assert metrics["recall_at_10"] > 1.2 * metrics["popularity_recall_at_10"]


def test_cold_start_user_is_recommended_popular_items(result, dataset):
    (cold_start_scores,) = result.scores(np.array([-1]))  # an id nobody has
    np.testing.assert_allclose(
        cold_start_scores, result.user_embeddings[0] @ result.item_embeddings.T
    )
    recommended = top_items(cold_start_scores[None, :], 50)[0]
    popularity = dataset.item_popularity(weighted=True).to_numpy()
    most_popular = np.argsort(-popularity, kind="stable")[:50]
    # 50 of 2,000 items drawn at random would share about one item with the top 50.
    assert len(np.intersect1d(recommended, most_popular)) >= 25


def test_users_without_interactions_are_served_as_cold_start(result, dataset):
    inactive = np.setdiff1d(result.user_ids, dataset.interactions["user_id"])
    assert len(inactive) > 0
    (cold_start, *inactive_users) = result.scores(np.r_[-1, inactive])
    for scores in inactive_users:
        np.testing.assert_allclose(scores, cold_start, atol=1e-6)


def test_training_is_deterministic():
    tiny = load_dataset("synthetic", n_items=200, n_users=60)
    first, second = (two_tower.train(tiny, dim=8, epochs=2, progress=False) for _ in range(2))
    np.testing.assert_array_equal(first.item_embeddings, second.item_embeddings)
    np.testing.assert_array_equal(first.user_embeddings, second.user_embeddings)


def test_needs_an_interaction_log(dataset):
    with pytest.raises(ValueError, match="interaction log"):
        two_tower.train(Dataset(name="catalog", catalog=dataset.catalog), progress=False)


def test_user_tower_onnx_matches_torch_for_any_batch(result, tmp_path):
    path = tmp_path / "user_tower.onnx"
    parity = export_user_tower(result, path)
    assert parity["max_abs_diff"] <= ONNX_ATOL == parity["atol"]
    assert parity["users"] == len(result.user_embeddings)

    graph = onnx.load(str(path)).graph
    (user_id,), (user_embedding,) = graph.input, graph.output
    assert (user_id.name, user_embedding.name) == ("user_id", "user_embedding")
    assert user_id.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert user_embedding.type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    # The graph looks the id up: user index i + 1 is result.user_ids[i], others are row 0.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    unknown = int(result.user_ids.max()) + 1
    for ids, rows in (([unknown], [0]), ([result.user_ids[2], result.user_ids[0], -5], [3, 1, 0])):
        (embedding,) = session.run(None, {"user_id": np.array(ids, np.int64).reshape(-1, 1)})
        assert embedding.shape == (len(rows), DIM)
        np.testing.assert_allclose(embedding, result.user_embeddings[rows], atol=ONNX_ATOL)
