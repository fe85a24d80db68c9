"""The text encoder's variants: their speed, their retrieval quality against fp32, the gate.

A build writes every variant of `names.TEXT_ENCODERS` as a model of its own (fp32, INT8 by
dynamic quantization, INT8 by static QDQ quantization) and records, in the fp32 encoder's
manifest (`metrics.variants`), what `evaluate` measured for each:

* **speed**: sequences/s in ONNX Runtime in this process, 2 intra-op threads without
  spinning (as the served CPU backend runs), batches of 32 held-out queries padded to each
  of the tokenizer's bucket widths 8 and 16; the variants take turns batch by batch, so
  drift on shared cores hits them alike.
* **quality**: items and held-out queries embedded by the variant and by fp32. The overlap
  of each query's top-k items with fp32's top-k, and search NDCG@10 of the retrieval alone
  on the dataset's graded relevance. On a catalog above `QUALITY_ITEMS` items both run on
  a seeded sample of that many items, and k shrinks with it (`comparison_depth`: top 20 of
  2,000 stands for top 100 of 10,000; on the synthetic catalog the dynamic INT8 encoder's
  overlap was 0.913 at top 20 of the sample and 0.918 at top 100 of all 10,000 items,
  while top 100 of the sample said 0.943).
* **gate** (`gate_failures`): overlap at least `MIN_OVERLAP` and NDCG@10 at least fp32's
  minus `NDCG_TOLERANCE` (when the dataset grades relevance). A dataset without logged
  queries cannot be measured, and no variant but fp32 passes.

The default build serves the fastest variant that passes (`choose`), fp32 when none does.
Held-out queries are never calibration texts: the graded queries when the dataset has them,
otherwise a sample of logged queries (`held_out_queries`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from builders import names, text_encoder
from builders.build import item_texts
from builders.data import Dataset
from builders.runtime.tokenization import DEFAULT_MAX_LENGTH, QueryTokenizer

#: Smallest overlap of a variant's top-k retrieval with fp32's.
MIN_OVERLAP = 0.99
#: How far a variant's NDCG@10 may fall below fp32's.
NDCG_TOLERANCE = 0.005
#: The retrieval depth compared: the index's candidates.
RETRIEVAL_K = 100
#: Items embedded per variant for the quality check (all of a smaller catalog).
QUALITY_ITEMS = 2000
HELD_OUT_QUERIES = 300
#: Item texts and logged queries each, for static quantization's calibration.
CALIBRATION_TEXTS = 256
SPEED_BATCH = 32
SPEED_WIDTHS = (8, 16)
SPEED_THREADS = 2
SPEED_ROUNDS = 10


@dataclass(frozen=True)
class QualitySet:
    """What the gate embeds: items (a catalog sample), held-out queries and their grades."""

    items: list[str]
    queries: list[str]
    #: Per query: item row in `items` -> relevance grade; None without graded relevance.
    grades: list[dict[int, int]] | None
    catalog_items: int

    @property
    def k(self) -> int:
        return comparison_depth(len(self.items), self.catalog_items)


def comparison_depth(sample_items: int, catalog_items: int, k: int = RETRIEVAL_K) -> int:
    """The top-k on a sample of the catalog that stands for the top `k` of all of it."""
    return max(1, min(k, sample_items, round(k * sample_items / catalog_items)))


def held_out_queries(dataset: Dataset, n: int = HELD_OUT_QUERIES, seed: int = 0) -> list[str]:
    """Distinct queries to judge the variants on: graded ones first, else logged ones."""
    if dataset.relevance is not None:
        pool = sorted(dataset.relevance["query"].unique())
    elif dataset.interactions is not None:
        pool = sorted(dataset.interactions["query"].dropna().unique())
    else:
        pool = []
    if len(pool) <= n:
        return list(pool)
    chosen = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(chosen)]


def calibration_texts(
    dataset: Dataset, held_out: Sequence[str], n: int = CALIBRATION_TEXTS, seed: int = 0
) -> list[str]:
    """Up to `n` catalog item texts and `n` logged queries that are not held out."""
    rng = np.random.default_rng(seed)
    items = item_texts(dataset)
    texts = [items[i] for i in sorted(rng.choice(len(items), min(n, len(items)), replace=False))]
    if dataset.interactions is not None:
        logged = sorted(set(dataset.interactions["query"].dropna()) - set(held_out))
        picked = rng.choice(len(logged), min(n, len(logged)), replace=False)
        texts += [logged[i] for i in sorted(picked)]
    return texts


def quality_set(
    dataset: Dataset, queries: Sequence[str], sample: int = QUALITY_ITEMS, seed: int = 0
) -> QualitySet:
    """The catalog sample (item-index order) and the held-out queries with their grades."""
    texts = item_texts(dataset)
    rows = np.arange(len(texts))
    if len(texts) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(texts), sample, replace=False))
    grades = None
    if dataset.relevance is not None:
        item_ids = np.sort(dataset.catalog.item_id.to_numpy(dtype=np.int64))
        sample_row = {int(item_ids[row]): position for position, row in enumerate(rows)}
        by_query: dict[str, dict[int, int]] = {query: {} for query in queries}
        for query, item_id, grade in dataset.relevance[["query", "item_id", "grade"]].itertuples(
            index=False
        ):
            if query in by_query and int(item_id) in sample_row:
                by_query[query][sample_row[int(item_id)]] = int(grade)
        grades = [by_query[query] for query in queries]
    return QualitySet([texts[row] for row in rows], list(queries), grades, len(texts))


def top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Item rows of each query's k best cosine scores, best first, [len(queries), k]."""
    scores = queries @ items.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean share of each row's items that both top-k lists hold."""
    k = reference.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(reference, candidate)]))


def ndcg_at_10(ranked: Sequence[int], grades: Mapping[int, int]) -> float:
    """NDCG@10 with gains 2^grade - 1 (0 when nothing is graded)."""
    gains = [2 ** grades.get(int(item), 0) - 1 for item in ranked[:10]]
    ideal = sorted((2**grade - 1 for grade in grades.values()), reverse=True)[:10]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    best = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / best if best else 0.0


def retrieval_overlap(
    fp32_path: Path,
    variant_path: Path,
    item_texts: Sequence[str],
    queries: Sequence[str],
    k: int = RETRIEVAL_K,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> float:
    """Top-k retrieval overlap of a variant with fp32, items and queries embedded by each."""
    tops = [
        top_k(
            text_encoder.embed(path, queries, max_length=max_length, progress=False),
            text_encoder.embed(path, item_texts, max_length=max_length, progress=False),
            k,
        )
        for path in (fp32_path, variant_path)
    ]
    return overlap(*tops)


def gate_failures(
    overlap_at_k: float | None, ndcg: float | None, fp32_ndcg: float | None
) -> list[str]:
    """Why a variant may not serve by default (empty: it passes)."""
    if overlap_at_k is None:
        return ["not measured: the dataset has no logged queries"]
    failures = []
    if overlap_at_k < MIN_OVERLAP:
        failures.append(f"top-k overlap {overlap_at_k:.4f} < {MIN_OVERLAP}")
    if ndcg is not None and fp32_ndcg is not None and ndcg < fp32_ndcg - NDCG_TOLERANCE:
        failures.append(f"NDCG@10 {ndcg:.4f} < fp32's {fp32_ndcg:.4f} - {NDCG_TOLERANCE}")
    return failures


def choose(variants: Mapping[str, Mapping]) -> str:
    """The fastest variant that passes (least time for one batch at each width), else fp32."""
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


def evaluate(
    paths: Mapping[str, Path],
    dataset: Dataset,
    held_out: Sequence[str],
    max_length: int = DEFAULT_MAX_LENGTH,
) -> dict:
    """Speed, quality and verdict of every variant (`paths`: model name -> ONNX file, fp32
    first under names.TEXT_ENCODER), and the variant to serve by default."""
    qset = quality_set(dataset, held_out)
    speed_texts = list(held_out) or qset.items
    speeds = measure_speed(paths, speed_texts)
    rankings: dict[str, np.ndarray] = {}
    if qset.queries:
        for name, path in paths.items():
            items = text_encoder.embed(path, qset.items, max_length=max_length, progress=False)
            queries = text_encoder.embed(path, qset.queries, max_length=max_length, progress=False)
            rankings[name] = top_k(queries, items, max(qset.k, 10))
    ndcgs = {
        name: round(float(np.mean([ndcg_at_10(r, g) for r, g in zip(ranked, qset.grades)])), 4)
        for name, ranked in rankings.items()
        if qset.grades is not None
    }
    fp32_ndcg = ndcgs.get(names.TEXT_ENCODER)
    variants = {}
    for name in paths:
        overlap_at_k = None
        if rankings:
            reference = rankings[names.TEXT_ENCODER][:, : qset.k]
            overlap_at_k = round(overlap(reference, rankings[name][:, : qset.k]), 4)
        failures = (
            []
            if name == names.TEXT_ENCODER
            else gate_failures(overlap_at_k, ndcgs.get(name), fp32_ndcg)
        )
        variants[name] = {
            "sequences_per_s": speeds[name],
            "overlap": overlap_at_k,
            "ndcg_at_10": ndcgs.get(name),
            "passes": not failures,
            "failures": failures,
        }
    return {
        "gate": {
            "min_overlap": MIN_OVERLAP,
            "ndcg_tolerance": NDCG_TOLERANCE,
            "top_k": qset.k,
            "stands_for_top_k": RETRIEVAL_K,
            "items": len(qset.items),
            "catalog_items": qset.catalog_items,
            "queries": len(qset.queries),
            "graded": qset.grades is not None,
        },
        "speed": {"batch": SPEED_BATCH, "threads": SPEED_THREADS, "rounds": SPEED_ROUNDS},
        "variants": variants,
        "chosen": choose(variants),
    }


def table(record: Mapping) -> list[str]:
    """The record as lines for a person: one per variant, then the choice."""
    gate = record["gate"]
    lines = [
        f"encoder variants (top {gate['top_k']} of {gate['items']:,} items, standing for top "
        f"{gate['stands_for_top_k']} of {gate['catalog_items']:,}; {gate['queries']} held-out "
        f"queries; speed: batch {record['speed']['batch']}, {record['speed']['threads']} threads)"
    ]
    for name, row in record["variants"].items():
        speeds = row["sequences_per_s"].items()
        speed = ", ".join(f"{rate:,.0f}/s at {width} tokens" for width, rate in speeds)
        verdict = "passes" if row["passes"] else "fails: " + "; ".join(row["failures"])
        lines.append(
            f"  {name}: {speed}; overlap {row['overlap']}, NDCG@10 {row['ndcg_at_10']}; {verdict}"
        )
    lines.append(f"  serving by default: {record['chosen']}")
    return lines
