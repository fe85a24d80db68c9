"""Exact nearest-neighbour retrieval as an ONNX model: MatMul + TopK over item embeddings.

The item-embedding matrix is a constant of the graph, so the index is an
ordinary versioned model; its manifest records the encoder (or user tower)
version whose embeddings it holds, and `check_pairing` refuses to pin an index
next to any other version. Exact search is fine to about a million items; the
matrix goes to `model.onnx.data` (ONNX external data) when it is large.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXTERNAL_DATA_BYTES = 512 * 1024 * 1024
EXTERNAL_DATA_FILE = "model.onnx.data"


class PairingError(ValueError):
    """An index pinned next to an encoder version that did not produce it."""


def index_graph(item_embeddings: np.ndarray, num_candidates: int) -> onnx.ModelProto:
    """`query_embedding` [batch, dim] -> top `num_candidates` by inner product.

    Outputs `candidate_indexes` (INT64, rows of `item_embeddings`) and
    `candidate_scores` (FP32), best first. With L2-normalised embeddings on
    both sides the score is the cosine similarity.
    """
    items, dim = item_embeddings.shape
    if not 0 < num_candidates <= items:
        raise ValueError(f"num_candidates must be in 1..{items}, got {num_candidates}")
    matrix = np.ascontiguousarray(item_embeddings.T.astype(np.float32))
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["query_embedding", "item_matrix"], ["all_scores"]),
            helper.make_node(
                "TopK",
                ["all_scores", "k"],
                ["candidate_scores", "candidate_indexes"],
                axis=1,
                largest=1,
                sorted=1,
            ),
        ],
        name="retrieval_index",
        inputs=[
            helper.make_tensor_value_info("query_embedding", TensorProto.FLOAT, ["batch", dim])
        ],
        outputs=[
            helper.make_tensor_value_info(
                "candidate_indexes", TensorProto.INT64, ["batch", num_candidates]
            ),
            helper.make_tensor_value_info(
                "candidate_scores", TensorProto.FLOAT, ["batch", num_candidates]
            ),
        ],
        initializer=[
            numpy_helper.from_array(matrix, "item_matrix"),
            numpy_helper.from_array(np.array([num_candidates], dtype=np.int64), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save_index(model: onnx.ModelProto, folder: Path) -> Path:
    """Write `model.onnx` (plus external data when the matrix is large)."""
    path = Path(folder) / "model.onnx"
    large = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(model, path, save_as_external_data=large, location=EXTERNAL_DATA_FILE)
    return path


def item_matrix(folder: Path) -> np.ndarray:
    """The item embeddings an index version holds, [n_items, dim]."""
    model = onnx.load(str(Path(folder) / "model.onnx"))
    matrix = next(t for t in model.graph.initializer if t.name == "item_matrix")
    return numpy_helper.to_array(matrix).T


def exact_top_k(
    item_embeddings: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference for the index: (indexes, scores), best first."""
    scores = queries.astype(np.float32) @ item_embeddings.T.astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def check_pairing(index_manifest: dict, producer: str, producer_version: int) -> None:
    """Refuse an index next to a `producer` version other than the one that embedded it."""
    recorded = index_manifest.get("depends_on", {}).get(producer)
    if recorded != producer_version:
        raise PairingError(
            f"index {index_manifest.get('model')} version {index_manifest.get('version')} "
            f"holds embeddings from {producer} version {recorded}, not version "
            f"{producer_version}; rebuild the index with that {producer} version"
        )
