"""The CTR ranker: served features in its examples, AUC in both frameworks, checked exports."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf

from builders import ranker
from builders.data import Dataset, load_dataset
from builders.ranker import (
    ONNX_ATOL,
    SAVEDMODEL_ATOL,
    Examples,
    ParityError,
    RankerResult,
    auc,
    build_examples,
    build_tables,
    engaged_pairs,
)
from builders.runtime.features import NUM_DENSE, NUM_SPARSE, FeatureTables, ranker_inputs


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset("synthetic", n_items=2000, n_users=500)


def affinity_scores(tables: FeatureTables) -> np.ndarray:
    """Stand-in retrieval scores: each user's share of each item's category, [users + 1, items]."""
    return tables.user_category_affinity[:, tables.item_category[1:]]


@pytest.fixture(scope="module")
def result(dataset: Dataset) -> RankerResult:
    tables = build_tables(dataset, dataset.split().train)
    return ranker.train(dataset, affinity_scores(tables), progress=False)


def examples_for(dataset: Dataset, tables: FeatureTables, scores, seed: int = 0) -> Examples:
    contexts = dataset.interactions[dataset.interactions["event"] == "purchase"].head(200)
    engaged = engaged_pairs(tables, dataset.interactions)
    return build_examples(tables, contexts, scores, engaged, negatives=4, seed=seed)


def test_examples_are_the_served_features(dataset):
    tables = build_tables(dataset)
    examples = examples_for(dataset, tables, affinity_scores(tables))
    assert examples.sparse.shape == (200, 5, NUM_SPARSE)
    assert examples.dense.shape == (200, 5, NUM_DENSE)
    # Rebuild every group from its user, candidates and scores with the serving function.
    user_ids = tables.user_ids[examples.sparse[:, 0, 0] - 1]
    item_indexes = examples.sparse[..., 1] - 1
    sparse, dense = ranker_inputs(tables, user_ids, item_indexes, examples.dense[..., 0])
    np.testing.assert_array_equal(sparse, examples.sparse)
    np.testing.assert_array_equal(dense, examples.dense)


def test_labels_mark_engaged_pairs(dataset):
    tables = build_tables(dataset)
    examples = examples_for(dataset, tables, affinity_scores(tables))
    assert (examples.labels[:, 0] == 1).all()
    engaged = engaged_pairs(tables, dataset.interactions)
    codes = (examples.sparse[..., 0]) * tables.n_items + examples.sparse[..., 1] - 1
    np.testing.assert_array_equal(examples.labels == 1, np.isin(codes, engaged))
    assert examples.labels[:, 1:].mean() < 0.2


def test_a_score_callable_and_a_score_matrix_give_the_same_examples(dataset):
    tables = build_tables(dataset)
    matrix = affinity_scores(tables)

    def by_callable(contexts):
        return matrix[tables.user_indexes(contexts["user_id"].to_numpy())]

    from_matrix = examples_for(dataset, tables, matrix)
    from_callable = examples_for(dataset, tables, by_callable)
    for field in ("sparse", "dense", "labels"):
        np.testing.assert_array_equal(getattr(from_matrix, field), getattr(from_callable, field))


def test_auc():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auc(labels, np.zeros(4)) == 0.5
    assert np.isnan(auc(np.ones(3), np.arange(3)))


def test_both_rankers_learn(result):
    assert result.metrics["test_groups"] > 100
    assert result.metrics["torch_auc"] > 0.65
    assert result.metrics["keras_auc"] > 0.65


def test_onnx_export_matches_torch(result, tmp_path):
    path = tmp_path / "model.onnx"
    parity = ranker.export_onnx(result.torch_model, path)
    assert parity["max_abs_diff"] <= ONNX_ATOL == parity["atol"]

    graph = onnx.load(str(path)).graph
    assert [t.name for t in graph.input] == ["sparse", "dense"]
    assert [t.name for t in graph.output] == ["score"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = session.run(
        ["score"], {"sparse": result.test_examples.sparse, "dense": result.test_examples.dense}
    )[0]
    assert served.shape == result.test_examples.labels.shape
    np.testing.assert_allclose(
        served, ranker.predict_torch(result.torch_model, result.test_examples), atol=ONNX_ATOL
    )


def test_saved_model_signature_and_parity(result, tmp_path):
    path = tmp_path / "model.savedmodel"
    parity = ranker.export_saved_model(result.keras_model, path)
    assert parity["max_abs_diff"] <= SAVEDMODEL_ATOL == parity["atol"]

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert sorted(inputs) == ["dense", "sparse"]
    assert inputs["sparse"].dtype == tf.int64 and inputs["sparse"].shape.as_list() == [
        None,
        None,
        NUM_SPARSE,
    ]
    assert inputs["dense"].dtype == tf.float32 and inputs["dense"].shape.as_list() == [
        None,
        None,
        NUM_DENSE,
    ]
    assert list(signature.structured_outputs) == ["score"]
    examples = result.test_examples
    served = signature(sparse=tf.constant(examples.sparse), dense=tf.constant(examples.dense))
    np.testing.assert_allclose(
        served["score"].numpy(),
        ranker.predict_keras(result.keras_model, examples),
        atol=SAVEDMODEL_ATOL,
    )


def test_parity_beyond_tolerance_raises():
    with pytest.raises(ParityError, match="exceeds"):
        ranker.check_parity("export", 1e-3, 1e-5)
    with pytest.raises(ParityError):
        ranker.check_parity("export", float("nan"), 1e-5)


def test_needs_an_interaction_log(dataset):
    tables = build_tables(dataset)
    with pytest.raises(ValueError, match="interaction log"):
        ranker.train(Dataset(name="catalog", catalog=dataset.catalog), affinity_scores(tables))


def search_scores(dataset: Dataset) -> ranker.SearchScores:
    """Stand-in scores: a random 'embedding' per query and item, BM25 = 1 for one item."""
    rng = np.random.default_rng(0)
    queries = sorted(dataset.interactions["query"].dropna().unique().tolist())
    n_items = len(dataset.catalog)

    def lexical(query: str) -> np.ndarray:
        scores = np.zeros(n_items, np.float32)
        scores[hash(query) % n_items] = 2.0
        return scores

    return ranker.SearchScores(
        queries,
        rng.normal(size=(len(queries), 4)).astype(np.float32),
        rng.normal(size=(n_items, 4)).astype(np.float32),
        lexical,
    )


def test_search_examples_are_what_each_session_saw(dataset):
    tables = build_tables(dataset)
    scores = search_scores(dataset)
    log = dataset.interactions
    examples = ranker.search_examples(tables, log, scores)
    sessions = list(ranker.search_sessions(log))
    assert examples.labels.shape == (len(sessions), ranker.SEARCH_GROUP_SIZE)
    for group, (_, session) in list(enumerate(sessions))[:50]:
        real = examples.weights[group] > 0
        items = tables.item_ids[examples.sparse[group, real, 1] - 1]
        assert set(items) <= set(session["item_id"])
        assert real.sum() == min(len(session), ranker.SEARCH_GROUP_SIZE)
        engaged = set(session.loc[session["event"].isin(ranker.POSITIVE_EVENTS), "item_id"])
        np.testing.assert_array_equal(examples.labels[group, real], np.isin(items, list(engaged)))
        row = scores.queries.index(session["query"].iloc[0])
        expected = (
            scores.item_embeddings[examples.sparse[group, real, 1] - 1]
            @ (scores.query_embeddings[row])
        )
        np.testing.assert_allclose(examples.dense[group, real, 0], expected, rtol=1e-5)
        assert set(np.unique(examples.dense[group, real, 1])) <= {0.0, 1.0}
    assert (examples.sparse[examples.weights == 0][:, 1:] == 0).all()  # padding items
    assert 0 < (examples.sparse[:, 0, 0] == 0).mean() < 0.5  # a share as unknown users


def test_a_ranker_ignores_the_features_it_does_not_use(dataset):
    tables = build_tables(dataset)
    examples = examples_for(dataset, tables, affinity_scores(tables))
    model = ranker.DCNRanker(tables.vocabulary_sizes, ranker.SEARCH_RANKER_FEATURES).eval()
    changed = Examples(np.zeros_like(examples.sparse), examples.dense.copy(), examples.labels)
    changed.dense[..., 2:] = 7.0
    np.testing.assert_array_equal(
        ranker.predict_torch(model, examples), ranker.predict_torch(model, changed)
    )
    with pytest.raises(ValueError, match="unknown ranker features"):
        ranker.DCNRanker(tables.vocabulary_sizes, ("query_length",))
