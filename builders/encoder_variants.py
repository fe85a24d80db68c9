"""The query encoder's variants: their speed, their search quality against the teacher, the gate.

A build writes every variant of `names.QUERY_ENCODERS` as a model of its own: the teacher
(`text_encoder`, all-MiniLM-L6-v2, which also embeds every item) and the students distilled
into its space (`builders.query_students`). It records, in the teacher's manifest
(`metrics.variants`), what `evaluate` measured for each:

* **speed**: sequences/s in ONNX Runtime in this process, 2 intra-op threads without
  spinning (as the served CPU backend runs), batches of 32 held-out queries padded to each
  of the tokenizer's bucket widths 8 and 16; the variants take turns batch by batch, so
  drift on shared cores hits them alike.
* **quality**: the held-out graded queries, embedded by the variant and searched as the
  served pipeline searches them without a user (`search`: the dense index over the teacher's
  item embeddings, BM25, their fusion and, where the data has logged searches, the search
  ranker as the build trains it). NDCG@10 of what is served and recall@100 of its
  candidates; for reference NDCG@10 of the fused and of the dense candidates, and the
  overlap of the dense top 100 with the teacher's. The ranker learns from the teacher's
  scores, whichever variant serves (`builders.build.build_search_ranker`): on the synthetic
  data a ranker trained on the static student's own scores lost 0.010-0.013 of NDCG@10 that
  the fused list had, and one trained on out-of-fold student scores (cross-fitted on halves
  of the logged queries) 0.011, while the teacher-trained ranker ordered the same student's
  candidates within 0.002 of the teacher's served NDCG@10 (ranker seeds 0-2, 2026-12-05).
* **gate** (`gate_failures`): NDCG@10 and recall@100 each within `RELATIVE_TOLERANCE` of the
  teacher's. The overlap is reported, not gated: a student may find other relevant items.
  A dataset without graded queries cannot be measured, and no variant but the teacher passes.

The default build serves the fastest variant that passes (`choose`), the teacher when none
does. The held-out queries are never training texts (`query_students.distillation_texts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import machine, names, text_encoder
from builders.data import Dataset
from builders.ranking_metrics import ndcg, recall
from builders.runtime.tokenization import DEFAULT_MAX_LENGTH, QueryTokenizer

#: How far below the teacher's (relative) a variant's NDCG@10 and recall@100 may fall.
RELATIVE_TOLERANCE = 0.01
#: The retrieval depth compared: the index's candidates.
RETRIEVAL_K = 100
HELD_OUT_QUERIES = 300
SPEED_BATCH = 32
SPEED_WIDTHS = (8, 16)
SPEED_THREADS = 2
SPEED_ROUNDS = 10

#: (queries, their embeddings [n, dim]) -> what search serves, the fused candidates and the
#: dense candidates: item indexes [n, N] best first, -1 for padding.
Search = Callable[[list[str], np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def held_out_queries(dataset: Dataset, n: int = HELD_OUT_QUERIES, seed: int = 0) -> list[str]:
    """Distinct graded queries to judge the variants on (none without graded relevance)."""
    if dataset.relevance is None:
        return []
    pool = sorted(dataset.relevance["query"].unique())
    if len(pool) <= n:
        return pool
    chosen = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(chosen)]


def grades_by_index(dataset: Dataset, queries: Sequence[str]) -> list[dict[int, int]]:
    """Per query: item index (position in item-id order) -> relevance grade."""
    item_ids = np.sort(dataset.catalog.item_id.to_numpy(dtype=np.int64))
    index_of = {int(item_id): index for index, item_id in enumerate(item_ids)}
    by_query: dict[str, dict[int, int]] = {query: {} for query in queries}
    for query, item_id, grade in dataset.relevance[["query", "item_id", "grade"]].itertuples(
        index=False
    ):
        if query in by_query and int(item_id) in index_of:
            by_query[query][index_of[int(item_id)]] = int(grade)
    return [by_query[query] for query in queries]


def overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean share of each row's items that both top-k lists hold."""
    k = reference.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(reference, candidate)]))


def gate_failures(row: Mapping, teacher: Mapping) -> list[str]:
    """Why a variant may not serve by default (empty: it passes)."""
    if row.get("ndcg_at_10") is None:
        return ["not measured: the dataset has no graded queries"]
    floor = 1 - RELATIVE_TOLERANCE
    return [
        f"{label} {row[key]:.4f} < {floor:.2f} x the teacher's {teacher[key]:.4f}"
        for key, label in (("ndcg_at_10", "NDCG@10"), ("recall_at_100", "recall@100"))
        if row[key] < floor * teacher[key]
    ]


def choose(variants: Mapping[str, Mapping]) -> str:
    """The fastest variant that passes (least time for one batch at each width), else the
    teacher."""
    passing = [name for name, row in variants.items() if row["passes"]]
    if not passing:
        return names.TEXT_ENCODER

    def seconds_per_batch(name: str) -> float:
        return sum(SPEED_BATCH / rate for rate in variants[name]["sequences_per_s"].values())

    return min(passing, key=seconds_per_batch)


def measure_speed(paths: Mapping[str, Path], texts: Sequence[str]) -> dict[str, dict[str, float]]:
    """Sequences/s of each model at batch SPEED_BATCH and each of SPEED_WIDTHS, taking turns."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = SPEED_THREADS
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {
        name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in paths.items()
    }
    batch = [texts[i % len(texts)] for i in range(SPEED_BATCH)]
    speeds: dict[str, dict[str, float]] = {name: {} for name in paths}
    for width in SPEED_WIDTHS:
        input_ids, attention_mask = QueryTokenizer(text_encoder.tokenizer_json(), width).encode(
            batch, searchable=False
        )
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(SPEED_ROUNDS + 1):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(None, feeds)
                if round_:  # the first round warms up
                    times[name].append(time.perf_counter() - started)
        for name, seconds in times.items():
            speeds[name][str(width)] = round(SPEED_BATCH / float(np.median(seconds)), 1)
    return speeds


def search_quality(
    path: Path,
    queries: list[str],
    grades: Sequence[Mapping[int, int]],
    search: Search,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[dict, np.ndarray]:
    """NDCG@10 of what search serves, recall@100 of its candidates, NDCG@10 of the fused and
    of the dense candidates, for the encoder at `path`; and its dense candidates (to compare
    with the teacher's)."""
    embedded = text_encoder.embed(path, queries, max_length=max_length, progress=False)
    served, fused, dense = search(queries, embedded)

    def mean(measure, ranked: np.ndarray, k: int) -> float:
        values = [measure(row[row >= 0], graded, k) for row, graded in zip(ranked, grades)]
        return round(float(np.mean(values)), 4)

    figures = {
        "ndcg_at_10": mean(ndcg, served, 10),
        "recall_at_100": mean(recall, fused, RETRIEVAL_K),
        "fused_ndcg_at_10": mean(ndcg, fused, 10),
        "dense_ndcg_at_10": mean(ndcg, dense, 10),
    }
    return figures, dense


def evaluate(
    paths: Mapping[str, Path],
    dataset: Dataset,
    held_out: list[str],
    search: Search,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict:
    """Speed, quality and verdict of every variant (`paths`: model name -> ONNX file, the
    teacher first under names.TEXT_ENCODER), and the variant to serve by default."""
    speeds = measure_speed(paths, held_out or dataset.catalog.title.astype(str).tolist())
    quality: dict[str, dict] = {name: {} for name in paths}
    dense: dict[str, np.ndarray] = {}
    if held_out:
        grades = grades_by_index(dataset, held_out)
        for name, path in paths.items():
            quality[name], dense[name] = search_quality(path, held_out, grades, search, max_length)
    teacher = quality[names.TEXT_ENCODER]
    variants = {}
    for name in paths:
        row = {
            "sequences_per_s": speeds[name],
            "ndcg_at_10": None,
            "recall_at_100": None,
            "fused_ndcg_at_10": None,
            "dense_ndcg_at_10": None,
            **quality[name],
            "overlap": round(overlap(dense[names.TEXT_ENCODER], dense[name]), 4) if dense else None,
        }
        failures = [] if name == names.TEXT_ENCODER else gate_failures(row, teacher)
        variants[name] = {**row, "passes": not failures, "failures": failures}
    return {
        "gate": {
            "relative_tolerance": RELATIVE_TOLERANCE,
            "measured_on": "search as served without a user: dense over the teacher's item "
            "embeddings, BM25, fusion and the search ranker trained on the teacher's scores",
            "top_k": RETRIEVAL_K,
            "items": len(dataset.catalog),
            "queries": len(held_out),
        },
        "speed": {
            "batch": SPEED_BATCH,
            "threads": SPEED_THREADS,
            "rounds": SPEED_ROUNDS,
            "machine": machine.describe(),
        },
        "variants": variants,
        "chosen": choose(variants),
    }


def table(record: Mapping) -> list[str]:
    """The record as lines for a person: one per variant, then the choice."""
    gate = record["gate"]
    lines = [
        f"query encoder variants ({gate['queries']} held-out graded queries over "
        f"{gate['items']:,} items; gate: NDCG@10 and recall@{gate['top_k']} within "
        f"{gate['relative_tolerance']:.0%} of the teacher's; speed: batch "
        f"{record['speed']['batch']}, {record['speed']['threads']} threads on "
        f"{machine.line(record['speed']['machine'])})"
    ]
    for name, row in record["variants"].items():
        speeds = row["sequences_per_s"].items()
        speed = ", ".join(f"{rate:,.0f}/s at {width} tokens" for width, rate in speeds)
        verdict = "passes" if row["passes"] else "fails: " + "; ".join(row["failures"])
        lines.append(
            f"  {name}: {speed}; NDCG@10 {row['ndcg_at_10']} (fused {row['fused_ndcg_at_10']}, "
            f"dense {row['dense_ndcg_at_10']}), recall@100 {row['recall_at_100']}, overlap "
            f"{row['overlap']}; {verdict}"
        )
    chosen = record["chosen"]
    if chosen == names.TEXT_ENCODER:
        chosen += " (the teacher: no query student passed the gate)"
    lines.append(f"  serving by default: {chosen}")
    return lines
