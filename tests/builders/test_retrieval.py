"""The retrieval index: ONNX MatMul + TopK equals exact NumPy search, alone and composed
after its encoder."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders.names import index_spec
from builders.retrieval import (
    PairingError,
    check_pairing,
    compose_retrieval,
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


def tiny_encoder(dim: int) -> onnx.ModelProto:
    """`input_ids` [batch, width] -> `embedding` [batch, dim]: a Gather and a ReduceMean, with
    an `item_matrix` constant of its own (the index's must not clash with it)."""
    table = normalised(np.random.default_rng(1), 30, dim)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["item_matrix", "input_ids"], ["tokens"]),
            helper.make_node("ReduceMean", ["tokens"], ["embedding"], axes=[1], keepdims=0),
        ],
        "encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "width"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(table, "item_matrix")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 7
    return model


def test_composed_retrieval_equals_the_encoder_then_the_index(tmp_path):
    rng = np.random.default_rng(0)
    items = normalised(rng, 200, 8)
    positions = rng.permutation(300)[:200]  # an updated index: rows map to positions
    index = index_graph(items, 10, positions=positions)
    ids = rng.integers(0, 30, (5, 4))
    encoder = ort.InferenceSession(tiny_encoder(8).SerializeToString())
    (embedding,) = encoder.run(["embedding"], {"input_ids": ids})
    alone = ort.InferenceSession(index.SerializeToString())
    expected = alone.run(["candidate_indexes", "candidate_scores"], {"query_embedding": embedding})
    composed = compose_retrieval(tiny_encoder(8), "embedding", index)
    onnx.checker.check_model(composed)
    assert [o.name for o in composed.graph.output] == [
        "embedding",
        "candidate_indexes",
        "candidate_scores",
    ]
    session = ort.InferenceSession(str(save_index(composed, tmp_path)))
    got = session.run(["embedding", "candidate_indexes", "candidate_scores"], {"input_ids": ids})
    np.testing.assert_array_equal(got[0], embedding)
    np.testing.assert_array_equal(got[1], expected[0])
    np.testing.assert_array_equal(got[2], expected[1])


def test_composition_refuses_clashing_opsets():
    encoder = tiny_encoder(8)
    encoder.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    index = index_graph(np.eye(8, dtype=np.float32), 2)
    index.opset_import.append(helper.make_opsetid("ai.onnx.ml", 2))
    with pytest.raises(ValueError, match="opset 3 of domain 'ai.onnx.ml', the index 2"):
        compose_retrieval(encoder, "embedding", index)
