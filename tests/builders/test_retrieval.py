"""The retrieval index: ONNX MatMul + TopK equals exact NumPy search."""

import numpy as np
import onnxruntime as ort
import pytest

from builders.names import index_spec
from builders.retrieval import (
    PairingError,
    check_pairing,
    exact_top_k,
    index_graph,
    save_index,
)


def normalised(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_index_matches_exact_search(tmp_path):
    rng = np.random.default_rng(0)
    items, queries = normalised(rng, 500, 16), normalised(rng, 7, 16)
    path = save_index(index_graph(items, 20), tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    indexes, scores = session.run(
        ["candidate_indexes", "candidate_scores"], {"query_embedding": queries}
    )
    expected_indexes, expected_scores = exact_top_k(items, queries, 20)
    assert indexes.dtype == np.int64 and indexes.shape == (7, 20)
    np.testing.assert_array_equal(indexes, expected_indexes)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-7).all()


def test_num_candidates_must_fit_the_catalog():
    with pytest.raises(ValueError, match="num_candidates must be in 1..5"):
        index_graph(np.zeros((5, 4), np.float32), 6)


def test_spec_matches_graph():
    spec = index_spec("search_index", dim=384, num_candidates=100)
    assert [t.name for t in spec.outputs] == ["candidate_indexes", "candidate_scores"]
    assert spec.outputs[0].dims == (100,)


def test_pairing_is_checked():
    manifest = {"model": "search_index", "version": 2, "depends_on": {"text_encoder": 1}}
    check_pairing(manifest, "text_encoder", 1)
    with pytest.raises(PairingError, match="holds embeddings from text_encoder version 1"):
        check_pairing(manifest, "text_encoder", 2)
