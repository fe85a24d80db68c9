"""The FAISS ANN index served by the real tritonserver: exact search's answers, and a
catalog update loaded without a restart while the previous version keeps answering."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from builders import ann, index_stage
from builders.retrieval import exact_top_k

MODEL = "ann_search_index"
N = 50


def clustered(n, dim=48, clusters=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32) * (
        0.8 / np.sqrt(dim)
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def served(triton_server):
    items = clustered(5000)
    index_stage.write_standalone(
        triton_server.model_repository,
        MODEL,
        items,
        np.arange(len(items)) + 1,
        kind="ann",
        num_candidates=N,
    )
    triton_server.load_model(MODEL)
    yield triton_server, items
    triton_server.unload_model(MODEL)


def query(server, queries, version=""):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        tensor = httpclient.InferInput("query_embedding", list(queries.shape), "FP32")
        tensor.set_data_from_numpy(queries)
        result = client.infer(MODEL, [tensor], model_version=str(version))
        return result.as_numpy("candidate_indexes"), result.as_numpy("candidate_scores")
    finally:
        client.close()


def test_served_ann_index_matches_exact_search(served):
    server, items = served
    queries = ann.probe_queries(items, 64, seed=11)
    indexes, scores = query(server, queries)
    assert indexes.dtype == np.int64 and indexes.shape == (64, N)
    assert scores.dtype == np.float32
    truth, truth_scores = exact_top_k(items, queries, N)
    assert ann.recall_at_k(indexes, truth) >= 0.99
    np.testing.assert_allclose(scores[:, 0], truth_scores[:, 0], atol=1e-5)
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ items.T, indexes, axis=1), atol=1e-5
    )


def test_concurrent_requests_batch_and_answer_alone(served):
    """Several requests at once (one dynamic batch) each get their own rows back."""
    from concurrent.futures import ThreadPoolExecutor

    server, items = served
    queries = [ann.probe_queries(items, 1 + i % 3, seed=20 + i) for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda q: query(server, q)[0], queries))
    for q, got in zip(queries, answers):
        single, _ = query(server, q)
        np.testing.assert_array_equal(got, single)


def test_update_is_loaded_without_a_restart(served):
    server, items = served
    new = clustered(20, seed=7)
    result = index_stage.update_index(
        server.model_repository,
        MODEL,
        add_ids=np.arange(20) + 10**6,
        add_embeddings=new,
        remove_ids=np.array([1, 2, 3]),  # item ids: positions 0, 1, 2
    )
    server.load_model(MODEL)  # repository API, explicit mode: the new version joins
    latest, _ = query(server, np.concatenate([new[:4], items[:3]]))
    np.testing.assert_array_equal(latest[:4, 0], len(items) + np.arange(4))
    assert not np.isin(latest, [0, 1, 2]).any()
    old, _ = query(server, items[:3], version=1)  # the version pipelines pin keeps serving
    np.testing.assert_array_equal(old[:, 0], [0, 1, 2])
    assert result.version == 2
