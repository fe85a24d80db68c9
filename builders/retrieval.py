"""Exact nearest-neighbour retrieval as an ONNX model: MatMul + TopK over item embeddings.

The item-embedding matrix is a constant of the graph, so the index is an
ordinary versioned model; its manifest records the encoder (or user tower)
version whose embeddings it holds, and `check_pairing` refuses to pin an index
next to any other version. The matrix goes to `model.onnx.data` (ONNX external
data) when it is large. Exact search costs time, memory and file size linear in
the catalog; from `builders.index_stage.ANN_MIN_ITEMS` items the builder writes
an approximate FAISS index instead (`builders.ann`), with the same tensor contract.

A catalog update (`builders.index_stage.update_index`) writes an exact index
over the live items only, with a `positions` constant mapping its rows back to
catalog positions (removed items are left out, so they are never returned).

A pipeline release serves an exact index inside its producer's graph
(`compose_retrieval`: the query encoder or user tower, then MatMul + TopK), so the
embedding never leaves the process that computed it: one stage instead of two.
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


#: Padding of an updated exact index with fewer live items than candidates (as FAISS pads).
PAD_INDEX = -1
PAD_SCORE = float(np.finfo(np.float32).min)


def index_graph(
    item_embeddings: np.ndarray, num_candidates: int, positions: np.ndarray | None = None
) -> onnx.ModelProto:
    """`query_embedding` [batch, dim] -> top `num_candidates` by inner product.

    Outputs `candidate_indexes` (INT64, rows of `item_embeddings`) and
    `candidate_scores` (FP32), best first. With L2-normalised embeddings on
    both sides the score is the cosine similarity. With `positions` (int64, one
    per row) the outputs are those positions instead of row numbers, and when
    fewer rows than `num_candidates` exist the rest is padding (-1, PAD_SCORE).
    """
    items, dim = item_embeddings.shape
    if items == 0:
        raise ValueError("the catalog is empty: an index needs at least one item")
    if positions is None and not 0 < num_candidates <= items:
        raise ValueError(f"num_candidates must be in 1..{items}, got {num_candidates}")
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    matrix = np.ascontiguousarray(item_embeddings.T.astype(np.float32))
    k = min(num_candidates, items)
    nodes = [helper.make_node("MatMul", ["query_embedding", "item_matrix"], ["all_scores"])]
    extra = []
    if positions is None:
        top = ["candidate_scores", "candidate_indexes"]
    else:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.shape != (items,):
            raise ValueError(f"positions must hold one int64 per item ({items})")
        top = ["top_scores", "top_rows"]
        padded = k < num_candidates
        gathered = "gathered" if padded else "candidate_indexes"
        nodes.append(helper.make_node("Gather", ["positions", "top_rows"], [gathered], axis=0))
        extra.append(numpy_helper.from_array(positions, "positions"))
        if padded:
            pads = np.array([0, 0, 0, num_candidates - k], dtype=np.int64)
            extra += [
                numpy_helper.from_array(pads, "pads"),
                numpy_helper.from_array(np.array(PAD_INDEX, np.int64), "pad_index"),
                numpy_helper.from_array(np.array(PAD_SCORE, np.float32), "pad_score"),
            ]
            nodes += [
                helper.make_node("Pad", [gathered, "pads", "pad_index"], ["candidate_indexes"]),
                helper.make_node("Pad", ["top_scores", "pads", "pad_score"], ["candidate_scores"]),
            ]
        else:
            nodes.append(helper.make_node("Identity", ["top_scores"], ["candidate_scores"]))
    nodes.insert(
        1,
        helper.make_node("TopK", ["all_scores", "k"], top, axis=1, largest=1, sorted=1),
    )
    graph = helper.make_graph(
        nodes=nodes,
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
            numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
            *extra,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def compose_retrieval(
    producer: onnx.ModelProto, producer_output: str, index: onnx.ModelProto
) -> onnx.ModelProto:
    """One graph: `producer` (its inputs, and `producer_output`, the embedding) feeding
    `index`'s `query_embedding`; outputs the embedding, `candidate_indexes` and
    `candidate_scores`. The index's names get the prefix `index/`, so none clashes; the
    producer's opset imports and IR version are raised to the pair's (load it for the call)."""
    from onnx import compose

    index = compose.add_prefix(index, "index/")
    opsets = {o.domain: o.version for o in producer.opset_import}
    for opset in index.opset_import:
        if opsets.setdefault(opset.domain, opset.version) != opset.version:
            raise ValueError(
                f"the producer imports opset {opsets[opset.domain]} of domain "
                f"{opset.domain or 'ai.onnx'!r}, the index {opset.version}: they cannot merge"
            )
    for model in (producer, index):
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    producer.ir_version = index.ir_version = max(producer.ir_version, index.ir_version)
    merged = compose.merge_models(
        producer,
        index,
        io_map=[(producer_output, "index/query_embedding")],
        outputs=[producer_output, "index/candidate_indexes", "index/candidate_scores"],
    )
    for output in merged.graph.output:  # the index's outputs keep their contract names
        if output.name.startswith("index/"):
            final = output.name.removeprefix("index/")
            for node in merged.graph.node:
                node.output[:] = [final if o == output.name else o for o in node.output]
            output.name = final
    return merged


def save_index(model: onnx.ModelProto, folder: Path) -> Path:
    """Write `model.onnx` (plus external data when the matrix is large)."""
    path = Path(folder) / "model.onnx"
    large = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(model, path, save_as_external_data=large, location=EXTERNAL_DATA_FILE)
    return path


def index_items(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(catalog positions int64 [live], embeddings float32 [live, dim]) an index version
    holds, exact (`model.onnx`) or ANN (`index.faiss`); removed items are not in it."""
    folder = Path(folder)
    if (folder / "index.faiss").exists():
        from builders import ann

        return ann.index_items(folder / "index.faiss")
    model = onnx.load(str(folder / "model.onnx"))
    constants = {t.name: t for t in model.graph.initializer}
    matrix = numpy_helper.to_array(constants["item_matrix"]).T
    if "positions" in constants:
        positions = numpy_helper.to_array(constants["positions"]).astype(np.int64)
    else:
        positions = np.arange(len(matrix), dtype=np.int64)
    return positions, np.ascontiguousarray(matrix)


def item_matrix(folder: Path) -> np.ndarray:
    """The item embeddings an index version holds, [n_items, dim], by catalog position
    (zero rows for items an update removed)."""
    folder = Path(folder)
    positions, vectors = index_items(folder)
    ids_file = folder / "item_ids.npy"
    n_items = len(np.load(ids_file)) if ids_file.exists() else int(positions.max()) + 1
    if len(positions) == n_items and (positions == np.arange(n_items)).all():
        return vectors
    full = np.zeros((n_items, vectors.shape[1]), dtype=np.float32)
    full[positions] = vectors
    return full


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
