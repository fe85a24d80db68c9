"""Quality benchmark: does the built pipeline find the right items? (`make quality`)

Builds a repository per dataset under `build/quality/` when missing, serves it
with the real tritonserver, and writes `perf/results/quality.json` plus a
Markdown table on stdout:

* recommend: recall@10 of each user's held-out interaction, two-tower against
  a popularity baseline (synthetic and movielens-100k; from the build manifest);
* ranker: held-out AUC computed offline with the framework and through the
  served model on the same examples (they must agree);
* the spread of both recommend figures over `--seeds` trainings (the build's, seed 0,
  and seeds 1.. trained offline the same way);
* search: NDCG@10 and recall@100 of each retrieval stage alone (dense, lexical),
  the fused (hybrid) candidates, the served pipeline and a plain BM25 over the
  same item texts: on the synthetic graded relevance, and on a catalog-only build of the
  `marketplace` dataset (`builders.data.marketplace`: a real-looking catalog with
  hand-written queries graded by rule);
* query encoder (synthetic and catalog-only, `search.encoder_variants`): the variant search
  serves and the build's gate figures for every variant (speed, NDCG@10, recall@100, overlap
  with the teacher), and the served search of a second build that serves the teacher
  (`search.teacher_build`), which the default build must match within 1%. The catalog-only
  build's gate judges on the rule-graded queries the dataset carries;
* rankers (synthetic): DCN-v2 and LightGBM side by side on the same retrieved candidates,
  search NDCG@10 and recommend held-out AUC (`ranker_comparison`). `--rankers` runs only
  this and merges it into an existing results file;
* differential privacy (synthetic): recall@10 of the two-tower model and held-out AUC of the
  recommend ranker trained offline without DP and with DP-SGD at each of `DP_EPSILONS`
  (`dp_comparison`, under `datasets.synthetic.recommend.dp`). `--dp` runs only this and
  merges it into an existing results file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from builders import gbdt, machine, names, ranker
from builders.build import item_texts, search_scores_of, two_tower_scores
from builders.data import load_dataset, with_user_indexes
from builders.offline import OfflinePipeline
from builders.pipelines import PIPELINE_FILE, PipelineSpec, lineage, query_encoder
from builders.ranking_metrics import ndcg, recall
from builders.repository import model_versions, read_manifest
from builders.retrieval import item_matrix
from builders.runtime.features import FeatureTables
from builders.runtime.fusion import FusionSettings
from builders.runtime.lexical import LexicalIndex
from builders.specs import parse_pbtxt
from clients.client import Client
from perf import RESULTS, ROOT, write_results
from server import TritonServer

OUT = RESULTS / "quality.json"
#: Report name -> (data source, its parameters, the matching `builders build` arguments).
DATASETS = {
    "synthetic": ("synthetic", {}, ["--dataset", "synthetic"]),
    "movielens-100k": ("movielens-100k", {}, ["--dataset", "movielens-100k"]),
    "catalog-only": ("marketplace", {}, ["--dataset", "marketplace"]),
}
#: Datasets whose search is also built serving the teacher, to compare the served quality.
TEACHER_BUILDS = ("synthetic", "catalog-only")
#: The dataset whose rankers are compared (`ranker_comparison`).
RANKER_DATASET = "synthetic"
#: The dataset and privacy budgets of the DP comparison (`dp_comparison`).
DP_DATASET = "synthetic"
DP_EPSILONS = (1.0, 8.0)


def bm25_baseline(texts: list[str]):
    """BM25 as a user would write it with `bm25s`: its tokenizer with English stop words and
    the Snowball stemmer, Lucene BM25 defaults. Returns query list -> item indexes [Q, k]."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")

    def tokenize(items: list[str]):
        return bm25s.tokenize(items, stopwords="en", stemmer=stemmer, show_progress=False)

    retriever = bm25s.BM25()
    retriever.index(tokenize(texts), show_progress=False)

    def top(queries: list[str], k: int) -> list[list[int]]:
        ranked = []
        for query in queries:
            tokenized = tokenize([query])
            if not tokenized.vocab:  # nothing but stop words
                ranked.append([])
                continue
            documents, scores = retriever.retrieve(
                tokenized, k=min(k, len(texts)), show_progress=False
            )
            ranked.append([int(d) for d, s in zip(documents[0], scores[0]) if s > 0])
        return ranked

    return top


def ensure_repository(name: str, repo: Path, build_args: list[str]) -> None:
    """Build `repo` unless it holds a search release of the current layout."""
    releases = model_versions(repo, names.SEARCH) if (repo / names.SEARCH).is_dir() else []
    if releases:
        try:
            PipelineSpec.load(repo / names.SEARCH / str(releases[-1]) / PIPELINE_FILE)
            return
        except ValueError as err:
            print(f"{name}: {err}; building it anew", file=sys.stderr)
            shutil.rmtree(repo)
    print(f"building {name} into {repo} ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "builders", "build", *build_args, "--out", str(repo)], check=True
    )


def search_quality(repo: Path, dataset, relevance, client, kinds: dict | None = None) -> dict:
    """NDCG@10 and recall@100 of each retrieval stage alone, the fused candidates (the
    served fusion, and reciprocal rank fusion for comparison), the served pipeline (through
    Triton, without a user) and a plain BM25 over the same item texts; with `kinds` (query ->
    kind), NDCG@10 per kind of query too."""
    grades = {
        query: dict(zip(group.item_id, group.grade)) for query, group in relevance.groupby("query")
    }
    queries = sorted(grades)
    version = model_versions(repo, names.SEARCH)[-1]
    offline = OfflinePipeline(repo, names.SEARCH, version)
    catalog_ids = offline.item_ids

    def as_ids(indexes) -> list[list[int]]:
        return [catalog_ids[row[row >= 0]].tolist() for row in np.asarray(indexes)]

    n = offline.spec.num_candidates
    bm25 = bm25_baseline(item_texts(dataset))
    systems = {
        "served": [[item.item_id for item in client.search(query, k=n).items] for query in queries],
        "dense": as_ids(offline.dense(queries)[0]),
        "bm25": [catalog_ids[row].tolist() for row in bm25(queries, n)],
    }
    if "hybrid" in offline.stages:
        systems["lexical"] = as_ids(offline.lexical(queries)[0])
        systems["hybrid"] = as_ids(offline.candidates(queries).indexes)
        rank_fusion = FusionSettings(method="rrf")
        systems["hybrid_rrf"] = as_ids(offline.candidates(queries, fusion=rank_fusion).indexes)

    def mean(measure, k: int, ranked, subset=None) -> float:
        values = [measure(r, grades[q], k) for q, r in zip(queries, ranked) if q in subset]
        return round(float(np.mean(values)), 4)

    everything = set(queries)
    report = {
        "queries": len(queries),
        "stages": sorted(offline.spec.stages),
        **{
            f"{measure.__name__}_at_{k}": {
                system: mean(measure, k, ranked, everything) for system, ranked in systems.items()
            }
            for measure, k in ((ndcg, 10), (recall, 100))
        },
    }
    if kinds:
        report["ndcg_at_10_by_kind"] = {
            kind: {
                "queries": len(subset),
                **{system: mean(ndcg, 10, ranked, subset) for system, ranked in systems.items()},
            }
            for kind in dict.fromkeys(kinds.values())
            if (subset := {q for q, k in kinds.items() if k == kind and q in grades})
        }
    return report


def teacher_build(repo: Path, build_args: list[str], dataset) -> dict:
    """NDCG@10 and recall@100 of search served by a build of the same data that serves the
    teacher (`--encoder text_encoder`), through Triton: what the default build's student
    must match."""
    ensure_repository(repo.name, repo, [*build_args, "--encoder", names.TEXT_ENCODER])
    with TritonServer(repo) as server, Client(server.grpc_url, timeout=60.0) as client:
        search = search_quality(repo, dataset, dataset.relevance, client)
    return {key: search[key]["served"] for key in ("ndcg_at_10", "recall_at_100")}


def encoder_figures(repo: Path) -> dict:
    """The query encoder the build serves and the build's gate figures for every variant
    (speed, NDCG@10, recall@100, overlap with the teacher)."""
    release = model_versions(repo, names.SEARCH)[-1]
    served = query_encoder(
        repo, PipelineSpec.load(repo / names.SEARCH / str(release) / PIPELINE_FILE)
    )
    teacher_version = model_versions(repo, names.TEXT_ENCODER)[-1]
    build = read_manifest(repo, names.TEXT_ENCODER, teacher_version)["metrics"]["variants"]
    return {"served": served.model, **build}


def ranker_auc(repo: Path, dataset, client) -> dict:
    """Held-out AUC of the recommend ranker offline (its framework: TensorFlow for DCN-v2,
    LightGBM for trees) and served (Triton), and its kind."""
    pipeline = model_versions(repo, names.RECOMMEND)[-1]
    spec = PipelineSpec.load(repo / names.RECOMMEND / str(pipeline) / PIPELINE_FILE)
    stages = lineage(repo, spec)  # with the user tower and index of its `retrieval`

    def folder(role: str) -> Path:
        return repo / stages[role].model / str(stages[role].version)

    tables = FeatureTables.load(folder("features") / "tables.npz")
    scores = two_tower_scores(folder("user_tower"), folder("index"), tables.user_ids)

    examples = auc_examples(tables, dataset, scores)
    kind = read_manifest(repo, names.RECOMMEND_RANKER, stages["ranker"].version)["metrics"].get(
        "ranker", "dcn"
    )
    if kind == "lambdamart":
        booster = gbdt.load_booster(folder("ranker") / gbdt.MODEL_FILE)
        rows = gbdt.rows(examples, booster.feature_name())
        offline_scores = booster.predict(rows).reshape(examples.labels.shape)
    else:
        import tensorflow as tf

        saved = tf.saved_model.load(str(folder("ranker") / "model.savedmodel"))
        signature = saved.signatures["serving_default"]
        offline_scores = signature(sparse=examples.sparse, dense=examples.dense)["score"].numpy()
    served_scores = []
    for start in range(0, len(examples.labels), names.STAGE_MAX_BATCH):
        part = slice(start, start + names.STAGE_MAX_BATCH)
        inputs = {"sparse": examples.sparse[part], "dense": examples.dense[part]}
        response = client.infer(names.RECOMMEND_RANKER, inputs, stages["ranker"].version)
        served_scores.append(response.outputs["score"])
    return {
        "ranker": kind,
        "test_groups": len(examples.labels),
        "offline_auc": round(ranker.auc(examples.labels, offline_scores), 4),
        "served_auc": round(ranker.auc(examples.labels, np.concatenate(served_scores)), 4),
    }


def auc_examples(tables: FeatureTables, dataset, scores: np.ndarray) -> ranker.Examples:
    """The held-out examples the ranker's AUC is measured on: one group per engaged test
    interaction, scored by the given two-tower `scores`."""
    split = dataset.split()
    contexts = split.test[split.test["event"].isin(ranker.POSITIVE_EVENTS)].reset_index(drop=True)
    engaged = ranker.engaged_pairs(tables, dataset.interactions)
    return ranker.build_examples(tables, contexts, scores, engaged, seed=1)


def recommend_seed_spread(dataset, build: dict, seeds: int) -> dict:
    """Recall@10 and ranker AUC of `seeds` trainings: the build's (seed 0, figures in `build`)
    and seeds 1.. trained here offline, as the build trains them (the ranker of the build's
    kind, `build["ranker"]`). Both figures move by about 0.01 from seed to seed, so one
    build's figure is one draw."""
    from builders import two_tower

    recalls, aucs = [build["recall_at_10"]], [build["offline_auc"]]
    dataset = with_user_indexes(dataset)[0]  # users in the order the build trains them
    tables = ranker.build_tables(dataset)
    for seed in range(1, seeds):
        print(
            f"{dataset.name}: training the recommend models with seed {seed} ...", file=sys.stderr
        )
        towers = two_tower.train(dataset, seed=seed, progress=False)
        scores = towers.user_embeddings @ towers.item_embeddings.T
        examples = auc_examples(tables, dataset, scores)
        recalls.append(towers.metrics["recall_at_10"])
        ranked = trained_recommend_scores(build["ranker"], dataset, scores, examples, seed)
        aucs.append(ranker.auc(examples.labels, ranked))
    return {
        "seeds": list(range(seeds)),
        "recall_at_10": [round(float(r), 4) for r in recalls],
        "auc": [round(float(a), 4) for a in aucs],
    }


def trained_recommend_scores(kind: str, dataset, scores, examples, seed: int) -> np.ndarray:
    """Scores of `examples` by a recommend ranker of `kind` trained as the build trains it on
    `dataset` (with user indexes) and the two-tower `scores`."""
    if kind == "lambdamart":
        _, train, test = ranker.recommend_training_examples(dataset, scores, seed=seed)
        trees = gbdt.train("recommend", train, test, ranker.ALL_FEATURES, seed=seed)
        return gbdt.predict(trees, examples)
    return ranker.predict_keras(ranker.train(dataset, scores, seed=seed).keras_model, examples)


def ranker_comparison(repo: Path, dataset) -> dict[str, dict[str, float]]:
    """DCN-v2 and LightGBM, both trained here on the same groups as the build trains them
    (whichever kind the build serves; LightGBM's search scores from its ONNX graph) and
    ranking the same retrieved candidates: search NDCG@10 on the graded queries without a
    user, as `search_quality` asks the served pipeline, and recommend AUC on the held-out
    examples of `ranker_auc`."""
    import onnxruntime as ort

    search = OfflinePipeline(repo, names.SEARCH, model_versions(repo, names.SEARCH)[-1])

    def folder(pipeline: OfflinePipeline, role: str) -> Path:
        stage = pipeline.stages[role]
        return repo / stage.model / str(stage.version)

    tokenizer = parse_pbtxt((folder(search, "tokenizer").parent / "config.pbtxt").read_text())
    teacher = repo / names.TEXT_ENCODER / str(model_versions(repo, names.TEXT_ENCODER)[-1])
    scores = search_scores_of(  # the teacher's, as the build's search rankers learn
        teacher / "model.onnx",
        item_matrix(folder(search, "index")),
        LexicalIndex.load(folder(search, "hybrid")),
        int(tokenizer["parameters"]["max_length"]["string_value"]),
    )
    # Trained as the build trains, on user indexes: the served tables' and tower's rows.
    indexed = with_user_indexes(dataset)[0]
    tables, train, test = ranker.search_training_examples(indexed, scores)
    uses = ranker.SEARCH_RANKER_FEATURES
    fitted = ranker.fit(indexed, tables, train, test, keras_too=False, uses=uses)
    dcn = ranker.torch_scores(fitted.torch_model)
    trees = gbdt.train("search", train, test, uses)
    graph = gbdt.onnx_model(trees.booster, trees.uses).SerializeToString()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])

    def lambdamart(sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return session.run(["score"], {"sparse": sparse, "dense": dense})[0]

    relevance = dataset.relevance
    grades = {q: dict(zip(g.item_id, g.grade)) for q, g in relevance.groupby("query")}
    queries = sorted(grades)
    search_ndcg = {}
    for kind, ranker_function in (("dcn", dcn), ("lambdamart", lambdamart)):
        answers = search.run(10, queries=queries, ranker=ranker_function)
        values = [ndcg(ids.tolist(), grades[q], 10) for q, (ids, _) in zip(queries, answers)]
        search_ndcg[kind] = round(float(np.mean(values)), 4)

    recommend = OfflinePipeline(repo, names.RECOMMEND, model_versions(repo, names.RECOMMEND)[-1])
    tables = FeatureTables.load(folder(recommend, "features") / "tables.npz")
    retrieval = two_tower_scores(
        folder(recommend, "user_tower"), folder(recommend, "index"), tables.user_ids
    )
    examples = auc_examples(tables, dataset, retrieval)
    recommend_auc = {
        kind: round(
            ranker.auc(
                examples.labels, trained_recommend_scores(kind, indexed, retrieval, examples, 0)
            ),
            4,
        )
        for kind in ("dcn", "lambdamart")
    }
    return {"search_ndcg_at_10": search_ndcg, "recommend_auc": recommend_auc}


def merge_rankers(report: dict, figures: dict, started: float) -> dict:
    """`report` with the ranker comparison under its dataset's search and recommend entries,
    and the date and machine of the run that measured it."""
    entry = report.setdefault("datasets", {}).setdefault(RANKER_DATASET, {})
    entry.setdefault("search", {})["ranker_ndcg_at_10"] = figures["search_ndcg_at_10"]
    entry.setdefault("recommend", {})["ranker_auc"] = figures["recommend_auc"]
    report["ranker_comparison"] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return report


def rankers_main(work: Path, out: Path) -> int:
    """`--rankers`: only the ranker comparison, merged into the results file `out`."""
    started = time.perf_counter()
    _, params, build_args = DATASETS[RANKER_DATASET]
    repo = work / RANKER_DATASET
    ensure_repository(RANKER_DATASET, repo, build_args)
    figures = ranker_comparison(repo, load_dataset(RANKER_DATASET, **params))
    return merge_into(out, lambda report: merge_rankers(report, figures, started), ranker_table)


def merge_into(out: Path, merge: Callable[[dict], dict], table: Callable[[dict], str]) -> int:
    """Merge a partial run into the results file `out` (created when missing), then print
    its table."""
    report = merge(json.loads(out.read_text()) if out.exists() else {})
    write_results(out, report)
    print(table(report))
    print(f"\nmerged into {out}")
    return 0


def recommend_recall(repo: Path) -> dict:
    version = model_versions(repo, names.USER_TOWER)[-1]
    metrics = read_manifest(repo, names.USER_TOWER, version)["metrics"]
    return {
        key: metrics[key]
        for key in ("recall_at_10", "popularity_recall_at_10", "test_users")
        if key in metrics
    }


def dp_comparison(dataset, epsilons=DP_EPSILONS, seed: int = 0) -> list[dict]:
    """Recall@10 of the two-tower model and held-out AUC of the recommend ranker (PyTorch),
    trained without DP (`epsilon` None) and with DP-SGD (`builders.dp`) at each epsilon, with
    the privacy plan each used. Every ranker trains and is measured on the groups retrieved by
    the two-tower model trained without DP, so the AUC shows the ranker's own cost of DP
    (hard negatives from a weaker retrieval make groups easier to rank)."""
    from builders import dp, two_tower

    rows, scores = [], None
    for epsilon in (None, *epsilons):
        privacy = None if epsilon is None else dp.PrivacySpec(epsilon)
        print(f"{dataset.name}: recommend models with DP epsilon {epsilon} ...", file=sys.stderr)
        started = time.perf_counter()
        towers = two_tower.train(dataset, seed=seed, progress=False, privacy=privacy)
        if scores is None:
            scores = towers.user_embeddings @ towers.item_embeddings.T
        ranked = ranker.train(dataset, scores, seed=seed, progress=False, privacy=privacy)
        row = {
            "epsilon": epsilon,
            "recall_at_10": round(towers.metrics["recall_at_10"], 4),
            "popularity_recall_at_10": round(towers.metrics["popularity_recall_at_10"], 4),
            "auc": round(ranked.metrics["torch_auc"], 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        if privacy is not None:
            row["two_tower"] = towers.privacy.manifest()
            row["ranker"] = ranked.privacy.manifest()
        rows.append(row)
    return rows


def merge_dp(report: dict, rows: list[dict], started: float) -> dict:
    """`report` with the DP comparison under the synthetic recommend entry, and the date and
    machine of the run that measured it."""
    entry = report.setdefault("datasets", {}).setdefault(DP_DATASET, {})
    entry.setdefault("recommend", {})["dp"] = rows
    report["dp_comparison"] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return report


def dp_main(out: Path) -> int:
    """`--dp`: only the DP comparison, merged into the results file `out`."""
    started = time.perf_counter()
    source, params, _ = DATASETS[DP_DATASET]
    rows = dp_comparison(load_dataset(source, **params))
    return merge_into(out, lambda report: merge_dp(report, rows, started), dp_table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.evaluation.quality", description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "quality")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--seeds", type=int, default=4, help="recommend trainings per dataset (%(default)s)"
    )
    parser.add_argument(
        "--rankers",
        action="store_true",
        help="only compare the rankers (DCN-v2 and LightGBM) on the synthetic build and merge "
        "the figures into --out",
    )
    parser.add_argument(
        "--dp",
        action="store_true",
        help="only train the recommend models without and with DP at each of "
        f"{', '.join(map(str, DP_EPSILONS))} and merge the figures into --out",
    )
    args = parser.parse_args(argv)
    if args.rankers:
        return rankers_main(args.work, args.out)
    if args.dp:
        return dp_main(args.out)
    started = time.perf_counter()
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine.describe(),
        "datasets": {},
    }
    args.work.mkdir(parents=True, exist_ok=True)
    for name, (source, params, build_args) in DATASETS.items():
        repo = args.work / name
        ensure_repository(name, repo, build_args)
        dataset = load_dataset(source, **params)
        entry: dict = {}
        with TritonServer(repo) as server, Client(server.grpc_url, timeout=60.0) as client:
            if dataset.has_interactions:
                entry["recommend"] = recommend_recall(repo)
                entry["recommend_ranker"] = ranker_auc(repo, dataset, client)
                build = {**entry["recommend"], **entry["recommend_ranker"]}
                entry["recommend_seeds"] = recommend_seed_spread(dataset, build, args.seeds)
            if dataset.relevance is not None:
                entry["search"] = search_quality(
                    repo, dataset, dataset.relevance, client, dataset.query_kinds
                )
        if name in TEACHER_BUILDS:
            entry["search"]["encoder_variants"] = encoder_figures(repo)
            entry["search"]["teacher_build"] = teacher_build(
                args.work / f"{name}-teacher", build_args, dataset
            )
        report["datasets"][name] = entry
        if name == RANKER_DATASET:
            compared = time.perf_counter()
            merge_rankers(report, ranker_comparison(repo, dataset), compared)
        if name == DP_DATASET:
            compared = time.perf_counter()
            merge_dp(report, dp_comparison(dataset), compared)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, report)
    print(readme_table(report))
    print(f"\nwrote {args.out}")
    return 0


SEARCH_SYSTEMS = (
    ("served", "served"),
    ("hybrid", "fused"),
    ("hybrid_rrf", "fused by RRF"),
    ("dense", "dense"),
    ("lexical", "lexical"),
    ("bm25", "BM25"),
)


def _figure(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _spread(values) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def _ratio(numerator, denominator) -> str:
    return f"{numerator / denominator:.3f}×" if numerator and denominator else "–"


def search_table(searches: dict[str, dict]) -> list[str]:
    """The NDCG@10 and recall@100 rows of `search_quality` reports, one pair per name."""
    header = " | ".join(label for _, label in SEARCH_SYSTEMS)
    lines = [
        f"| dataset | measure | {header} | served ÷ BM25 | served ÷ dense |",
        "|---|---|" + "---|" * (len(SEARCH_SYSTEMS) + 2),
    ]
    for name, search in searches.items():
        for key, label in (("ndcg_at_10", "NDCG@10"), ("recall_at_100", "recall@100")):
            values = search[key]
            cells = " | ".join(_figure(values.get(system)) for system, _ in SEARCH_SYSTEMS)
            served = values.get("served")
            ratios = f"{_ratio(served, values.get('bm25'))} | {_ratio(served, values.get('dense'))}"
            lines.append(f"| {name} | {label} | {cells} | {ratios} |")
    return lines


def readme_table(report: dict) -> str:
    """The tables README.md quotes, from quality.json (a test checks that it quotes the
    committed copy, docs/results/quality.json)."""
    header = " | ".join(label for _, label in SEARCH_SYSTEMS)
    searches = {
        name: entry["search"] for name, entry in report["datasets"].items() if entry.get("search")
    }
    lines = search_table(searches)
    lines += [
        "",
        "| dataset | recommend recall@10: two-tower | popularity | ranker AUC: offline | served "
        "| seeds | recall@10 mean (range) | AUC mean (range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["datasets"].items():
        recommend, ranker_figures = entry.get("recommend"), entry.get("recommend_ranker", {})
        if not recommend:
            continue
        spread = entry.get("recommend_seeds", {})
        lines.append(
            f"| {name} | {_figure(recommend.get('recall_at_10'))} "
            f"| {_figure(recommend.get('popularity_recall_at_10'))} "
            f"| {_figure(ranker_figures.get('offline_auc'))} "
            f"| {_figure(ranker_figures.get('served_auc'))} "
            f"| {len(spread.get('seeds', [])) or '–'} "
            f"| {_spread(spread.get('recall_at_10'))} | {_spread(spread.get('auc'))} |"
        )
    for name, entry in report["datasets"].items():
        by_kind = entry.get("search", {}).get("ndcg_at_10_by_kind")
        if not by_kind:
            continue
        lines += [
            "",
            f"| {name}: NDCG@10 by kind of query | queries | {header} |",
            "|---|---|" + "---|" * len(SEARCH_SYSTEMS),
        ]
        for kind, values in by_kind.items():
            cells = " | ".join(_figure(values.get(system)) for system, _ in SEARCH_SYSTEMS)
            lines.append(f"| {kind} | {values['queries']} | {cells} |")
    lines += encoder_table(report)
    return "\n".join(lines) + "\n"


def dp_table(report: dict) -> str:
    """The DP comparison (README.md quotes it; a test checks it against
    docs/results/quality.json)."""
    rows = report["datasets"][DP_DATASET]["recommend"]["dp"]
    lines = [
        f"| {DP_DATASET}: epsilon (delta 1/users) | noise multiplier: two-tower / ranker "
        "| two-tower recall@10 | popularity recall@10 | recommend ranker AUC |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row["epsilon"] is None:
            label, noise = "no DP", "–"
        else:
            label = f"{row['epsilon']:g}"
            noise = f"{row['two_tower']['noise_multiplier']:.2f} / "
            noise += f"{row['ranker']['noise_multiplier']:.2f}"
        lines.append(
            f"| {label} | {noise} | {_figure(row['recall_at_10'])} "
            f"| {_figure(row['popularity_recall_at_10'])} | {_figure(row['auc'])} |"
        )
    return "\n".join(lines) + "\n"


def ranker_table(report: dict) -> str:
    """The rankers side by side (README.md quotes it; a test checks it against
    docs/results/quality.json)."""
    entry = report["datasets"][RANKER_DATASET]
    search, recommend = entry["search"]["ranker_ndcg_at_10"], entry["recommend"]["ranker_auc"]
    lines = [
        f"| {RANKER_DATASET} | DCN-v2 | LightGBM (LambdaMART / binary) |",
        "|---|---|---|",
        f"| search NDCG@10 | {_figure(search['dcn'])} | {_figure(search['lambdamart'])} |",
        f"| recommend AUC | {_figure(recommend['dcn'])} | {_figure(recommend['lambdamart'])} |",
    ]
    return "\n".join(lines) + "\n"


def encoder_table(report: dict) -> list[str]:
    """Per dataset: each query encoder variant's speed and gate figures, and the served
    search of the default build against the teacher build's."""
    lines = [
        "",
        "| dataset | query encoder | sequences/s at 8 / 16 tokens | NDCG@10 | recall@100 "
        "| fused NDCG@10 | dense NDCG@10 | overlap | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    served = []
    for name, entry in report["datasets"].items():
        search = entry.get("search") or {}
        if not (variants := search.get("encoder_variants")):
            continue
        for model, row in variants["variants"].items():
            by_width = sorted(row["sequences_per_s"].items(), key=lambda item: int(item[0]))
            rates = " / ".join(f"{rate:,.0f}" for _, rate in by_width)
            verdict = "passes" if row["passes"] else "fails"
            if model == variants["served"]:
                verdict += ", served"
            lines.append(
                f"| {name} | `{model}` | {rates} | {_figure(row['ndcg_at_10'])} "
                f"| {_figure(row['recall_at_100'])} | {_figure(row['fused_ndcg_at_10'])} "
                f"| {_figure(row['dense_ndcg_at_10'])} "
                f"| {_figure(row['overlap'])} | {verdict} |"
            )
        teacher = search["teacher_build"]
        served.append(
            f"| {name} | `{variants['served']}` | {_figure(search['ndcg_at_10']['served'])} "
            f"| {_figure(teacher['ndcg_at_10'])} "
            f"| {_ratio(search['ndcg_at_10']['served'], teacher['ndcg_at_10'])} "
            f"| {_figure(search['recall_at_100']['served'])} "
            f"| {_figure(teacher['recall_at_100'])} |"
        )
    if not served:
        return []
    return lines + [
        "",
        "| dataset | served encoder | served NDCG@10 | teacher build's | ratio "
        "| served recall@100 | teacher build's |",
        "|---|---|---|---|---|---|---|",
        *served,
    ]


if __name__ == "__main__":
    sys.exit(main())
