"""Do synonyms help search, and should they expand the dense query too?
(`python -m perf.evaluation.synonyms_quality`)

Scores the graded queries of both `make quality` datasets offline, with the functions the
served stages run (`builders.offline`), on the repositories `perf.evaluation.quality` builds under
`build/quality/` (built here when missing), in three arms:

* `none`: no synonyms;
* `lexical`: the synonyms expand the BM25 query (what a build with `--synonyms` serves);
* `lexical_and_dense`: the query the encoder embeds is expanded too: the query text with the
  text of every synonym a rule gives it that the query does not already hold.

Synonyms: the catalog-only build takes `builders/data/marketplace/synonyms.txt` (hand-written
for its catalog), the synthetic build a file generated from its taxonomy (each leaf's nouns as one
equivalence: the words titles use and the ones shoppers use). Reports NDCG@10 and recall@100
of the dense, lexical and fused candidates and of the served order (the fused order, or the
release's search ranker over the fused candidates: the ranker of the build, trained without
synonyms), NDCG@10 of the served order per kind of query where the data has kinds, and
writes `docs/results/synonyms.json` with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from builders import machine, names
from builders.data import load_dataset, marketplace
from builders.data.taxonomy import LEAVES
from builders.offline import NO_USER, Candidates, OfflinePipeline, fused_candidates
from builders.ranking_metrics import ndcg, recall
from builders.repository import model_versions
from builders.runtime.features import FeatureTables, ranker_inputs
from builders.runtime.fusion import EMBEDDINGS_FILE, FusionSettings
from builders.runtime.lexical import LexicalIndex, synonyms_of, words
from builders.runtime.synonyms import Synonyms
from builders.runtime.topk import top_k
from perf import ROOT, write_results
from perf.evaluation.quality import DATASETS, ensure_repository

OUT = ROOT / "docs" / "results" / "synonyms.json"
ARMS = ("none", "lexical", "lexical_and_dense")


def taxonomy_synonyms() -> str:
    """The synthetic catalog's synonyms: each leaf's nouns, one equivalence a line."""
    lines = [", ".join(leaf.nouns) for leaf in LEAVES if len(leaf.nouns) > 1]
    return "# generated from builders/data/taxonomy.py\n" + "\n".join(lines) + "\n"


def dense_expander(synonyms: Synonyms) -> Callable[[str], str]:
    """query -> the query with the text of each output of every rule whose input it holds
    (as analysed words in a row) and whose words it lacks."""
    terms = sorted({t for rule in synonyms.rules for t in (*rule.inputs, *rule.outputs)})
    analysed = dict(zip(terms, words(terms)))

    def holds(held: list[str], term: list[str]) -> bool:
        return any(held[i : i + len(term)] == term for i in range(len(held) - len(term) + 1))

    def expand(query: str) -> str:
        held = words([query])[0]
        extra = [
            output
            for rule in synonyms.rules
            if any(holds(held, analysed[term]) for term in rule.inputs)
            for output in rule.outputs
            if not set(analysed[output]) <= set(held)
        ]
        return " ".join([query, *dict.fromkeys(extra)])

    return expand


def served_order(pipeline: OfflinePipeline, found: Candidates) -> np.ndarray:
    """The release's final order of `found` (no user), item indexes [Q, N] (-1 padding)."""
    if "ranker" not in pipeline.stages:
        return found.indexes
    tables = FeatureTables.load(pipeline.stage_folder("features") / "tables.npz")
    users = np.full(len(found.indexes), NO_USER, dtype=np.int64)
    sparse, dense = ranker_inputs(
        tables, users, found.indexes, found.dense_scores, found.lexical_scores
    )
    scores = pipeline.rank(sparse, dense)
    order = np.full(found.indexes.shape, -1, dtype=np.int64)
    for row in range(len(order)):
        best, _ = top_k(found.indexes[row], scores[row], found.indexes.shape[1])
        order[row, : len(best)] = best
    return order


def measure(repo: Path, relevance, synonyms: Synonyms, kinds: dict | None) -> dict:
    grades = {q: dict(zip(g.item_id, g.grade)) for q, g in relevance.groupby("query")}
    queries = sorted(grades)
    pipeline = OfflinePipeline(repo, names.SEARCH, model_versions(repo, names.SEARCH)[-1])
    folder = pipeline.stage_folder("hybrid")
    plain = LexicalIndex.load(folder)
    expanded = LexicalIndex(plain.retriever, synonyms)
    items = np.load(folder / EMBEDDINGS_FILE)
    settings = FusionSettings.load(folder)
    n = pipeline.spec.num_candidates
    dense_queries = list(map(dense_expander(synonyms), queries))
    report = {
        "queries": len(queries),
        "queries_a_rule_expands": sum(t != q for q, t in zip(queries, dense_queries)),
        "ranker": "ranker" in pipeline.stages,
        "arms": {},
    }
    for arm in ARMS:
        lexical = plain if arm == "none" else expanded
        texts = dense_queries if arm == "lexical_and_dense" else queries
        embeddings, *dense = pipeline.retrieve(texts)
        found = fused_candidates(queries, embeddings, tuple(dense), lexical, items, n, settings)
        systems = {
            "dense": dense[0],
            "lexical": lexical.search(queries, n)[0],
            "fused": found.indexes,
            "served": served_order(pipeline, found),
        }
        ranked = {
            name: [pipeline.item_ids[row[row >= 0]].tolist() for row in indexes]
            for name, indexes in systems.items()
        }
        entry = {
            "ndcg_at_10": {n: mean(ndcg, 10, ranked[n], grades) for n in systems},
            "recall_at_100": {n: mean(recall, 100, ranked[n], grades) for n in systems},
        }
        if kinds:
            entry["served_ndcg_at_10_by_kind"] = {
                kind: mean(
                    ndcg, 10, ranked["served"], grades, {q for q in kinds if kinds[q] == kind}
                )
                for kind in marketplace.KINDS
            }
        report["arms"][arm] = entry
    return report


def mean(measure, k: int, ranked: list[list[int]], grades: dict, subset=None) -> float:
    """The mean of `measure`@k over the graded queries (sorted, as `ranked` is), or `subset`."""
    values = [
        measure(r, grades[q], k)
        for q, r in zip(sorted(grades), ranked)
        if subset is None or q in subset
    ]
    return round(float(np.mean(values)), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.evaluation.synonyms_quality", description=__doc__
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "quality")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    catalog_only = load_dataset("marketplace")
    setups = {
        "catalog-only": (
            catalog_only.relevance,
            synonyms_of(marketplace.SYNONYMS.read_text(), str(marketplace.SYNONYMS)),
            catalog_only.query_kinds,
            "builders/data/marketplace/synonyms.txt",
        ),
        "synthetic": (
            load_dataset("synthetic").relevance,
            synonyms_of(taxonomy_synonyms(), "taxonomy"),
            None,
            "generated from builders/data/taxonomy.py",
        ),
    }
    report: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine.describe()}
    for name, (relevance, synonyms, kinds, source) in setups.items():
        repo = args.work / name
        ensure_repository(name, repo, DATASETS[name][2])
        entry = measure(repo, relevance, synonyms, kinds)
        report[name] = {"synonyms": source, "rules": len(synonyms.rules), **entry}
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
