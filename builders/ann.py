"""Approximate nearest-neighbour indexes (FAISS IVF-Flat): build, tune and check recall.

Exact retrieval scans every item embedding per query. An IVF index clusters the items
into `nlist` lists (k-means on a sample) and scans only the `nprobe` lists nearest to the
query, so a query costs about nprobe / nlist of the exact scan. The vectors are stored
uncompressed (Flat), so scores are exact inner products and the only error is an item in
a list that was not probed. `tune` picks `nlist` from the catalog size and the smallest
`nprobe` that reaches the recall target (recall@k against exact search) on tuning
queries, then measures recall on separate held-out queries; a build that misses the
target within the allowed share of lists fails with the figures (`RecallError`).

FAISS ids are catalog positions (item indexes), so removing items (`remove_ids`) and
appending new ones (`add_with_ids`) keep every other item's position.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

#: recall@RECALL_K of the ANN index against exact search, measured on held-out queries.
RECALL_TARGET = 0.99
RECALL_K = 100
#: Above this share of the lists probed, IVF costs too close to the exact scan to be worth it.
MAX_PROBE_FRACTION = 0.25
#: k-means training points per list (FAISS warns below 39) and the sample cap.
TRAIN_POINTS_PER_LIST = 64
#: The coarsest IVF tried: probing 25 % of 8 lists still skips three quarters of the items.
MIN_NLIST = 8


class RecallError(RuntimeError):
    """The ANN index cannot reach the recall target within the allowed search cost."""


@dataclass(frozen=True)
class AnnParams:
    """What a built ANN index is and how it is searched (goes to ann.json and the manifest)."""

    kind: str  # the FAISS factory string, e.g. "IVF1024,Flat"
    nlist: int
    nprobe: int
    metric: str = "inner_product"
    train_points: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TunedIndex:
    index: faiss.Index
    params: AnnParams
    metrics: dict  # recall figures, timings, the nprobe curve


def default_nlist(n_items: int) -> int:
    """About 4·sqrt(n) lists (a power of two), with enough training points per list."""
    if n_items < 1:
        raise ValueError("the catalog is empty: an index needs at least one item")
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n_items))))
    return int(max(1, min(target, 65536, n_items // 39 or 1)))


def train_ivf(embeddings: np.ndarray, nlist: int, seed: int = 0) -> tuple[faiss.Index, int]:
    """An empty trained IVF-Flat inner-product index (k-means on a sample)."""
    n, dim = embeddings.shape
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    points = min(n, nlist * TRAIN_POINTS_PER_LIST)
    rng = np.random.default_rng(seed)
    sample = embeddings if points == n else embeddings[np.sort(rng.choice(n, points, False))]
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed
    ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index, points


def add_items(index: faiss.Index, embeddings: np.ndarray, positions: np.ndarray) -> None:
    """Add vectors under their catalog positions, in chunks (bounded temporary memory)."""
    for start in range(0, len(embeddings), 262_144):
        chunk = np.ascontiguousarray(embeddings[start : start + 262_144], dtype=np.float32)
        index.add_with_ids(chunk, np.asarray(positions[start : start + 262_144], np.int64))


def exact_neighbours(
    positions: np.ndarray, embeddings: np.ndarray, queries: np.ndarray, k: int
) -> np.ndarray:
    """Exact top-k catalog positions per query (FAISS flat inner product), [q, k]."""
    flat = faiss.IndexFlatIP(embeddings.shape[1])
    flat.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(embeddings)))
    return np.where(rows >= 0, np.asarray(positions)[rows], -1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index also returned."""
    hits = [
        len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, (t >= 0).sum())
        for f, t in zip(found, truth)
    ]
    return float(np.mean(hits))


def measure_recall(
    index: faiss.Index, nprobe: int, queries: np.ndarray, truth: np.ndarray
) -> float:
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), truth.shape[1])
    return recall_at_k(found, truth)


def probe_queries(embeddings: np.ndarray, n: int, seed: int, noise: float = 0.6) -> np.ndarray:
    """Queries near the catalog: random items plus isotropic noise of `noise` × their norm.

    A real query lands near the items it is for but not on them; with noise 0.6 the query's
    cosine to its source item is about 0.85. Used when no logged queries are at hand."""
    rng = np.random.default_rng(seed)
    source = embeddings[rng.choice(len(embeddings), n, replace=n > len(embeddings))]
    norms = np.linalg.norm(source, axis=1, keepdims=True)
    dim = embeddings.shape[1]
    jitter = rng.standard_normal(source.shape).astype(np.float32) * (noise / math.sqrt(dim))
    queries = source + jitter * norms
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True) * norms).astype(np.float32)


def smallest_nprobe(
    index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target: float, max_nprobe: int
) -> tuple[int | None, dict[int, float]]:
    """The smallest nprobe <= max_nprobe whose recall reaches `target` (None: none does);
    doubling, then a binary search between the last two powers of two."""
    curve: dict[int, float] = {}

    def recall(nprobe: int) -> float:
        if nprobe not in curve:
            curve[nprobe] = measure_recall(index, nprobe, queries, truth)
        return curve[nprobe]

    low, high = 0, 1
    while recall(high) < target:
        if high >= max_nprobe:
            return None, curve
        low, high = high, min(2 * high, max_nprobe)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if recall(middle) >= target else (middle, high)
    return high, curve


def tune(
    embeddings: np.ndarray,
    tune_queries: np.ndarray,
    heldout_queries: np.ndarray,
    *,
    k: int = RECALL_K,
    target: float = RECALL_TARGET,
    nlist: int | None = None,
    max_probe_fraction: float = MAX_PROBE_FRACTION,
    positions: np.ndarray | None = None,
    seed: int = 0,
) -> TunedIndex:
    """Build an IVF-Flat index over `embeddings` and tune it to recall@k >= target.

    Tries `nlist` (default: `default_nlist`), then halves it (coarser lists hold more of
    each query's neighbours; small catalogs need that) down to MIN_NLIST; for each, the
    smallest nprobe within `max_probe_fraction` of the lists. `positions` are the FAISS ids
    (default: row numbers). Raises RecallError with the measured figures when no setting
    reaches the target on the tuning queries, or the held-out recall misses it.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError("the catalog is empty: an index needs at least one item")
    n = len(embeddings)
    positions = np.arange(n, dtype=np.int64) if positions is None else np.asarray(positions)
    k = min(k, n)
    started = time.perf_counter()
    tune_truth = exact_neighbours(positions, embeddings, tune_queries, k)
    heldout_truth = exact_neighbours(positions, embeddings, heldout_queries, k)
    tried: dict[str, dict] = {}
    schedule = [nlist or default_nlist(n)]
    while schedule[-1] // 2 >= MIN_NLIST:
        schedule.append(schedule[-1] // 2)
    for lists in schedule:
        built = time.perf_counter()
        index, train_points = train_ivf(embeddings, lists, seed)
        add_items(index, embeddings, positions)
        train_add_s = time.perf_counter() - built
        max_nprobe = max(1, int(lists * max_probe_fraction))
        # Tune a little above the target so the held-out queries, new to it, still reach it.
        nprobe, curve = smallest_nprobe(
            index, tune_queries, tune_truth, min(1.0, target + 0.002), max_nprobe
        )
        tried[str(lists)] = {str(p): round(r, 5) for p, r in sorted(curve.items())}
        if nprobe is not None:
            break
    figures = {
        "items": n,
        "nlist": lists,
        "max_nprobe": max_nprobe,
        "recall_target": target,
        "recall_k": k,
        "nprobe_curve": tried[str(lists)],
        "nlist_tried": list(tried),
    }
    if nprobe is None:
        best = max(curve.items(), key=lambda item: item[1])
        raise RecallError(
            f"ANN index over {n:,} items reaches recall@{k} {best[1]:.4f} at best "
            f"(IVF{lists},Flat, nprobe {best[0]}, at most {max_nprobe} of {lists} lists "
            f"allowed), below the target {target}; recall by nlist and nprobe: {tried}. "
            "Use --index exact, or allow more lists to be probed"
        )
    heldout = measure_recall(index, nprobe, heldout_queries, heldout_truth)
    figures.update(
        nprobe=nprobe,
        recall_at_k_tuning=round(curve[nprobe], 5),
        recall_at_k=round(heldout, 5),
        tuning_queries=len(tune_queries),
        heldout_queries=len(heldout_queries),
        train_add_s=round(train_add_s, 2),
        tune_s=round(time.perf_counter() - started - train_add_s, 2),
    )
    if heldout < target:
        raise RecallError(
            f"ANN index over {n:,} items (IVF{lists},Flat, nprobe {nprobe}) reaches "
            f"recall@{k} {heldout:.4f} on {len(heldout_queries)} held-out queries, below the "
            f"target {target}; figures: {figures}"
        )
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
    params = AnnParams(
        kind=f"IVF{lists},Flat", nlist=lists, nprobe=nprobe, train_points=train_points
    )
    return TunedIndex(index=index, params=params, metrics=figures)


def index_items(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(positions int64 [live], vectors float32 [live, dim]) stored in an IVF-Flat index
    file, sorted by position: read straight from its inverted lists."""
    index = faiss.read_index(str(path))
    return ivf_items(index)


def ivf_items(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    ids, vectors = [], []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size == 0:
            continue
        ids.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * invlists.code_size)
        vectors.append(np.frombuffer(codes.copy(), dtype=np.float32).reshape(size, ivf.d))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, ivf.d), np.float32)
    positions, matrix = np.concatenate(ids).astype(np.int64), np.concatenate(vectors)
    order = np.argsort(positions, kind="stable")
    return positions[order], matrix[order]


def index_bytes(index: faiss.Index) -> int:
    """Serialized size of the index: about what it holds in memory."""
    return int(faiss.serialize_index(index).nbytes)
