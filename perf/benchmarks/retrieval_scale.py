"""How retrieval cost grows with the catalog: exact ONNX MatMul + TopK against the FAISS ANN.

`make bench-retrieval` (`python -m perf.benchmarks.retrieval_scale`) builds both index kinds with
the builder's own code (`builders.index_stage.write_standalone`: the same files, configs
and tuning as `python -m builders build`) over synthetic item embeddings of the encoder's
dimension (384), clustered like real ones (a two-level Gaussian mixture on the unit
sphere: topics, sub-clusters within them, items around those), for each catalog size.
For each index it measures, in one run and one process, on the same held-out queries
(fresh draws from the same mixture, never in the catalog):

* recall@100 against exact search (FAISS flat inner product);
* batch-1 latency p50 / p99 and queries per second, one thread each (the configs' default:
  `intra_op_thread_count` 1 for ONNX Runtime, `omp_threads` 1 for FAISS); also the
  throughput of batches of 32 (what dynamic batching hands a stage);
* memory: the index's bytes (the ONNX matrix, or the FAISS index file);
* build time: writing the version (exact: the ONNX graph, plus loading the session;
  ANN: k-means training, adding, tuning nprobe to recall@100 >= 0.99, writing).

At `--served-size` (default 1M) both index versions are then loaded into the real
`tritonserver` (explicit mode, our Python-based onnxruntime backend and the ANN Python
model) and queried over gRPC: load time, latency and recall through the server.

Results go to `perf/results/retrieval_scale.json` and a plot of p99 and memory against
the catalog size to `perf/results/retrieval_scale.png`. The embeddings are synthetic: the
text encoder embeds about 350 titles/s on 2 cores, so embedding 1M titles would take
most of an hour; what is measured is the index stage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from perf import RESULTS, ROOT, write_results
from perf.latency import summary

SCRATCH = ROOT / "build" / "retrieval_scale"
DIM = 384
K = 100


def mixture(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """n unit vectors: 100 topics, a sub-cluster per ~1,000 items, items around them.

    Cosine to the sub-cluster centre about 0.75, to the topic about 0.5: nearest
    neighbours are close (as for near-duplicate products) and clusters overlap."""
    rng = np.random.default_rng(seed)
    topics = _unit(rng.standard_normal((100, dim)).astype(np.float32))
    n_sub = max(100, n // 1000)
    sub = _unit(
        topics[rng.integers(0, 100, n_sub)]
        + rng.standard_normal((n_sub, dim)).astype(np.float32) * (1.0 / math.sqrt(dim))
    )
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 200_000):
        size = min(200_000, n - start)
        chunk = sub[rng.integers(0, n_sub, size)] + rng.standard_normal((size, dim)).astype(
            np.float32
        ) * (0.9 / math.sqrt(dim))
        out[start : start + size] = _unit(chunk)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def latency(search, queries: np.ndarray, batch32: bool = True) -> dict:
    """Batch-1 latency percentiles over `queries`, and batch-32 throughput."""
    search(queries[:2])  # warm-up
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - started) * 1000)
    times = np.array(times)
    row = {
        **summary(times, 3),
        "qps": round(1000 / float(times.mean()), 1),
    }
    if batch32:
        batches = [queries[i : i + 32] for i in range(0, min(len(queries), 128), 32)]
        started = time.perf_counter()
        for b in batches:
            search(b)
        row["qps_batch32"] = round(sum(map(len, batches)) / (time.perf_counter() - started), 1)
    return row


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    from builders.ann import recall_at_k

    return round(recall_at_k(found, truth), 5)


def folder_mb(folder: Path, pattern: str) -> float:
    return round(sum(p.stat().st_size for p in folder.glob(pattern)) / 2**20, 1)


def measure_size(n: int, args, repo: Path) -> tuple[list[dict], np.ndarray, np.ndarray]:
    import faiss
    import onnxruntime as ort

    from builders import index_stage
    from builders.ann import exact_neighbours
    from builders.runtime.ann_index import AnnIndex

    data = mixture(n + args.queries, seed=args.seed)
    items, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)
    truth = exact_neighbours(ids, items, queries, K)
    faiss.omp_set_num_threads(args.threads)
    rows = []

    started = time.perf_counter()
    path, _ = index_stage.write_standalone(
        repo, "exact_index", items, ids, kind="exact", num_candidates=K, version=1
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(path / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    build_s = time.perf_counter() - started

    def exact(q):
        return session.run(["candidate_indexes"], {"query_embedding": q})[0]

    row = {"items": n, "index": "exact", "params": {"kind": "onnx MatMul+TopK"}}
    row["recall_at_100"] = recall(exact(queries), truth)
    row.update(latency(exact, queries))
    row.update(memory_mb=round(items.nbytes / 2**20, 1), build_s=round(build_s, 2))
    row["file_mb"] = folder_mb(path, "model.onnx*")
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)

    started = time.perf_counter()
    path, metrics = index_stage.write_standalone(
        repo, "ann_index", items, ids, kind="ann", num_candidates=K, version=1, seed=args.seed
    )
    build_s = time.perf_counter() - started
    index = AnnIndex.load(path, K, threads=args.threads, device="cpu")
    row = {"items": n, "index": "ann", "params": metrics["ann"]}
    row["recall_at_100"] = recall(index.search(queries)[0], truth)
    row.update(latency(lambda q: index.search(q)[0], queries))
    row.update(memory_mb=folder_mb(path, "index.faiss"), build_s=round(build_s, 2))
    row["file_mb"] = row["memory_mb"]
    row["tuning"] = {
        k: metrics["recall"][k]
        for k in ("recall_at_k", "recall_at_k_tuning", "nprobe_curve", "train_add_s", "tune_s")
    }
    rows.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return rows, queries, truth


def measure_served(repo: Path, queries: np.ndarray, truth: np.ndarray, args) -> list[dict]:
    """Both index versions through the real tritonserver (gRPC, batch 1)."""
    import tritonclient.grpc as grpcclient

    from server import TritonServer

    rows = []
    with TritonServer(repo, model_control="explicit", exit_timeout_secs=10) as triton:
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        for model, kind in (("ann_index", "ann"), ("exact_index", "exact")):
            started = time.perf_counter()
            triton.load_model(model)
            load_s = time.perf_counter() - started

            def search(q, model=model):
                tensor = grpcclient.InferInput("query_embedding", list(q.shape), "FP32")
                tensor.set_data_from_numpy(np.ascontiguousarray(q))
                return client.infer(model, [tensor]).as_numpy("candidate_indexes")

            row = {"items": len(np.load(repo / model / "1" / "item_ids.npy")), "index": kind}
            row["served_by"] = "tritonserver 2.51 (gRPC, batch 1)"
            row["load_s"] = round(load_s, 2)
            found = np.concatenate(
                [search(queries[i : i + 32]) for i in range(0, len(queries), 32)]
            )
            row["recall_at_100"] = recall(found, truth)
            row.update(latency(search, queries, batch32=False))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            triton.unload_model(model)
        client.close()
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("exact", "o-"), ("ann", "s-")):
        mine = sorted((r for r in rows if r["index"] == kind), key=lambda r: r["items"])
        sizes = [r["items"] for r in mine]
        label = "exact (ONNX MatMul+TopK)" if kind == "exact" else "ANN (FAISS IVF-Flat)"
        left.plot(sizes, [r["p99_ms"] for r in mine], style, label=label)
        right.plot(sizes, [r["memory_mb"] for r in mine], style, label=label)
    for axis, title in (
        (left, "p99 latency, batch 1, 1 thread (ms)"),
        (right, "index memory (MB)"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("catalog items")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("Retrieval cost against catalog size (384-d, top 100, recall@100 ≥ 0.99)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.benchmarks.retrieval_scale")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="%(default)s")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries per size")
    parser.add_argument("--threads", type=int, default=1, help="per index (%(default)s)")
    parser.add_argument(
        "--served-size", type=int, default=1_000_000, help="size served by tritonserver (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval_scale.json")
    parser.add_argument(
        "--scratch", type=Path, default=SCRATCH, help="index versions while measured (%(default)s)"
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "dim": DIM,
        "k": K,
        "threads": args.threads,
        "queries": args.queries,
        "embeddings": "synthetic two-level Gaussian mixture on the unit sphere (perf.mixture)",
        "rows": [],
        "served": [],
    }
    for n in sizes:
        repo = args.scratch / f"repo_{n}"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        print(f"retrieval_scale: {n:,} items", file=sys.stderr, flush=True)
        rows, queries, truth = measure_size(n, args, repo)
        result["rows"] += rows
        if n == args.served_size:
            result["served"] = measure_served(repo, queries, truth, args)
        shutil.rmtree(repo, ignore_errors=True)
        write_results(args.out, result)  # after every size
    by = {(r["items"], r["index"]): r for r in result["rows"]}
    result["ratios"] = {
        str(n): {
            "p99_exact_over_ann": round(by[n, "exact"]["p99_ms"] / by[n, "ann"]["p99_ms"], 1),
            "ann_recall_at_100": by[n, "ann"]["recall_at_100"],
        }
        for n in sizes
    }
    write_results(args.out, result)
    plot(result["rows"], args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
