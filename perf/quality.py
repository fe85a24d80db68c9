"""Quality benchmark: does the built pipeline find the right items? (`make quality`)

Builds a repository per dataset under `build/quality/` when missing, serves it
with the real tritonserver, and writes `perf/results/quality.json` plus a
Markdown table on stdout:

* recommend: recall@10 of each user's held-out interaction, two-tower against
  a popularity baseline (synthetic and movielens-100k; from the build manifest);
* ranker: held-out AUC computed offline with the framework and through the
  served model on the same examples (they must agree);
* search: NDCG@10 on the synthetic graded relevance for the served pipeline,
  its retrieval stage alone, and BM25 over the same item texts;
* INT8 encoder: overlap of its top-100 retrieval with the fp32 encoder's.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from builders import names, ranker, text_encoder
from builders.build import item_texts, two_tower_scores
from builders.data import load_dataset
from builders.offline import OfflinePipeline
from builders.repository import model_versions, read_manifest
from builders.runtime.features import FeatureTables
from clients.client import Client
from server import TritonServer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results" / "quality.json"
DATASETS = {"synthetic": {}, "movielens-100k": {}}


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class BM25:
    """Okapi BM25 (k1 = 1.5, b = 0.75) over tokenised documents."""

    def __init__(self, documents: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.documents = [Counter(tokens(d)) for d in documents]
        self.lengths = np.array([sum(d.values()) for d in self.documents], dtype=np.float64)
        frequency = Counter(term for d in self.documents for term in d)
        n = len(self.documents)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in frequency.items()}
        self.k1, self.b, self.average = k1, b, self.lengths.mean()

    def top(self, query: str, k: int) -> np.ndarray:
        scores = np.zeros(len(self.documents))
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.average)
        for term in set(tokens(query)):
            if term not in self.idf:
                continue
            counts = np.array([d.get(term, 0) for d in self.documents], dtype=np.float64)
            scores += self.idf[term] * counts * (self.k1 + 1) / (counts + norm)
        return np.argsort(-scores, kind="stable")[:k]


def ndcg(ranked: list[int], grades: dict[int, int], k: int = 10) -> float:
    gains = [2 ** grades.get(item, 0) - 1 for item in ranked[:k]]
    ideal = sorted((2**g - 1 for g in grades.values()), reverse=True)[:k]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best else 0.0


def ensure_repository(name: str, repo: Path) -> None:
    if (repo / names.SEARCH).is_dir():
        return
    print(f"building {name} into {repo} ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "builders", "build", "--dataset", name, "--out", str(repo)],
        check=True,
    )


def search_quality(repo: Path, dataset, client) -> dict:
    relevance = dataset.relevance
    grades = {
        query: dict(zip(group.item_id, group.grade)) for query, group in relevance.groupby("query")
    }
    queries = sorted(grades)
    version = model_versions(repo, names.SEARCH)[-1]
    offline = OfflinePipeline(repo, names.SEARCH, version)
    catalog_ids = offline.item_ids
    candidates, _ = offline.retrieve(queries)
    bm25 = BM25(item_texts(dataset))
    systems = {
        "served pipeline (retrieval + ranker)": [
            [item.item_id for item in client.search(query, k=10).items] for query in queries
        ],
        "retrieval only (encoder cosine)": [catalog_ids[row[:10]].tolist() for row in candidates],
        "BM25 (item texts)": [catalog_ids[bm25.top(q, 10)].tolist() for q in queries],
    }
    return {
        "queries": len(queries),
        "ndcg_at_10": {
            system: round(float(np.mean([ndcg(r, grades[q]) for q, r in zip(queries, ranked)])), 4)
            for system, ranked in systems.items()
        },
    }


def int8_overlap(repo: Path, dataset) -> dict:
    """Top-100 retrieval overlap between the INT8 and the fp32 encoder (items and queries)."""
    version = model_versions(repo, names.TEXT_ENCODER_INT8)[-1]
    source = read_manifest(repo, names.TEXT_ENCODER_INT8, version)["depends_on"]
    fp32 = repo / names.TEXT_ENCODER / str(source[names.TEXT_ENCODER]) / "model.onnx"
    int8 = repo / names.TEXT_ENCODER_INT8 / str(version) / "model.onnx"
    texts = item_texts(dataset)
    queries = sorted(set(dataset.sample_queries(300, seed=9)))
    overlaps = []
    items = {path: text_encoder.embed(path, texts, progress=False) for path in (fp32, int8)}
    asked = {path: text_encoder.embed(path, queries, progress=False) for path in (fp32, int8)}
    tops = {}
    for path in (fp32, int8):
        scores = asked[path] @ items[path].T
        tops[path] = np.argsort(-scores, axis=1)[:, :100]
    for a, b in zip(tops[fp32], tops[int8]):
        overlaps.append(len(set(a) & set(b)) / 100)
    return {"queries": len(queries), "recall_at_100_overlap": round(float(np.mean(overlaps)), 4)}


def ranker_auc(repo: Path, dataset, client) -> dict:
    """Held-out AUC of the recommend ranker offline (TensorFlow) and served (Triton)."""
    import tensorflow as tf

    pipeline = model_versions(repo, names.RECOMMEND)[-1]
    pins = read_manifest(repo, names.RECOMMEND, pipeline)["depends_on"]

    def folder(model: str) -> Path:
        return repo / model / str(pins[model])

    tables = FeatureTables.load(folder(names.RANKING_FEATURES) / "tables.npz")
    scores = two_tower_scores(
        folder(names.USER_TOWER), folder(names.RECOMMEND_INDEX), tables.user_ids
    )

    split = dataset.split()
    contexts = split.test[split.test["event"].isin(ranker.POSITIVE_EVENTS)].reset_index(drop=True)
    engaged = ranker.engaged_pairs(tables, dataset.interactions)
    examples = ranker.build_examples(tables, contexts, scores, engaged, seed=1)

    saved = tf.saved_model.load(str(folder(names.RECOMMEND_RANKER) / "model.savedmodel"))
    signature = saved.signatures["serving_default"]
    offline_scores = signature(sparse=examples.sparse, dense=examples.dense)["score"].numpy()
    served_scores = []
    for start in range(0, len(examples.labels), names.STAGE_MAX_BATCH):
        part = slice(start, start + names.STAGE_MAX_BATCH)
        inputs = {"sparse": examples.sparse[part], "dense": examples.dense[part]}
        response = client.infer(names.RECOMMEND_RANKER, inputs, pins[names.RECOMMEND_RANKER])
        served_scores.append(response.outputs["score"])
    return {
        "test_groups": len(examples.labels),
        "offline_auc": round(ranker.auc(examples.labels, offline_scores), 4),
        "served_auc": round(ranker.auc(examples.labels, np.concatenate(served_scores)), 4),
    }


def recommend_recall(repo: Path) -> dict:
    version = model_versions(repo, names.USER_TOWER)[-1]
    metrics = read_manifest(repo, names.USER_TOWER, version)["metrics"]
    return {
        key: metrics[key]
        for key in ("recall_at_10", "popularity_recall_at_10", "test_users")
        if key in metrics
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.quality", description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "quality")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict = {"machine": f"{__import__('os').cpu_count()} CPU cores", "datasets": {}}
    for name, params in DATASETS.items():
        repo = args.work / name
        ensure_repository(name, repo)
        dataset = load_dataset(name, **params)
        entry: dict = {"recommend": recommend_recall(repo)}
        with TritonServer(repo) as server, Client(server.grpc_url, timeout=60.0) as client:
            entry["recommend_ranker"] = ranker_auc(repo, dataset, client)
            if dataset.relevance is not None:
                entry["search"] = search_quality(repo, dataset, client)
        if dataset.relevance is not None:
            entry["int8_encoder"] = int8_overlap(repo, dataset)
        report["datasets"][name] = entry
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"\nwrote {args.out}")
    return 0


def markdown(report: dict) -> str:
    lines = ["| dataset | measure | value |", "|---|---|---|"]
    for name, entry in report["datasets"].items():
        for section, values in entry.items():
            for key, value in values.items():
                if isinstance(value, dict):
                    for system, number in value.items():
                        lines.append(f"| {name} | {section} {key}: {system} | {number} |")
                else:
                    lines.append(f"| {name} | {section} {key} | {value} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
