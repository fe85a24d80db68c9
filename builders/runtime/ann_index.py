"""Pure logic of the approximate-nearest-neighbour index model (FAISS IVF).

Copied next to `model.py`, `index.faiss`, `ann.json` and `item_ids.npy` into the version
folder of an ANN index (`search_index` / `recommend_index` built with `--index ann`), so it
imports only the standard library, numpy and faiss. Same tensor contract as the exact ONNX
index: `query_embedding` FP32 [batch, dim] in; `candidate_indexes` INT64 [batch, N] (catalog
positions, best first, -1 where fewer than N exist) and `candidate_scores` FP32 [batch, N]
(inner product; `PAD_SCORE` for padding) out.

The FAISS ids of the index are catalog positions (item index = row of the catalog sorted by
item id, as everywhere in the repository). Removed items are taken out of the inverted lists,
so they are never returned; added items get new positions after the last one.

On a node where faiss has GPU support (the derived image installs `faiss-gpu-cu12`) and a
GPU is visible, the index is copied to the GPU at load time (`device` parameter: `auto`,
the default; `cpu` keeps it on the CPU; `gpu` requires a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

INDEX_FILE = "index.faiss"
PARAMS_FILE = "ann.json"
ITEM_IDS_FILE = "item_ids.npy"
PAD_INDEX = -1
#: What FAISS itself reports for a missing inner-product result (-FLT_MAX): finite, lowest.
PAD_SCORE = float(np.finfo(np.float32).min)


class QueryError(ValueError):
    """A query batch the index cannot search (shape, dtype)."""


class AnnIndex:
    """A loaded IVF index that answers `num_candidates` positions per query, best first."""

    def __init__(self, index, num_candidates: int, nprobe: int, on_gpu: bool = False) -> None:
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        self.index = index
        self.num_candidates = num_candidates
        self.nprobe = nprobe
        self.on_gpu = on_gpu
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        space.set_index_parameter(index, "nprobe", int(nprobe))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        num_candidates: int,
        *,
        nprobe: int | None = None,
        threads: int | None = None,
        device: str = "auto",
        gpu_id: int = 0,
    ) -> AnnIndex:
        """Load a version folder; `nprobe` overrides the tuned value in `ann.json`."""
        folder = Path(folder)
        params = json.loads((folder / PARAMS_FILE).read_text())
        if threads:
            faiss.omp_set_num_threads(int(threads))
        index = faiss.read_index(str(folder / INDEX_FILE))
        resources = None
        if device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if device == "gpu" and gpus == 0:
            raise RuntimeError("device gpu asked for, but faiss sees no GPU (faiss-gpu needed)")
        if device != "cpu" and gpus > 0:
            resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(resources, gpu_id, index)
        loaded = cls(
            index, num_candidates, nprobe or int(params["nprobe"]), on_gpu=resources is not None
        )
        loaded._gpu_resources = resources  # must live as long as the GPU index
        return loaded

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indexes int64 [B, N], scores float32 [B, N]) for queries [B, dim]."""
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise QueryError(f"query_embedding must be [batch, {self.dim}], got {queries.shape}")
        if not np.issubdtype(queries.dtype, np.floating):
            raise QueryError(f"query_embedding must be FP32, got {queries.dtype}")
        return search(self.index, queries, self.num_candidates)


def search(index, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search with the contract's padding: -1 and PAD_SCORE where fewer than n exist."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if len(queries) == 0:
        return np.zeros((0, n), np.int64), np.zeros((0, n), np.float32)
    scores, labels = index.search(queries, n)
    labels = labels.astype(np.int64, copy=False)
    scores = np.where(labels >= 0, scores, PAD_SCORE).astype(np.float32, copy=False)
    return labels, scores
