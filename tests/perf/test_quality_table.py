"""The README's quality tables, generated from a quality report."""

from perf.evaluation.quality import readme_table

REPORT = {
    "date": "2026-12-03",
    "datasets": {
        "synthetic": {
            "recommend": {"recall_at_10": 0.157, "popularity_recall_at_10": 0.05},
            "recommend_ranker": {"offline_auc": 0.8241, "served_auc": 0.8241},
            "recommend_seeds": {"seeds": [0, 1, 2], "recall_at_10": [0.157, 0.15, 0.164],
                                "auc": [0.8241, 0.83, 0.8182]},
            "search": {
                "ndcg_at_10": {"served": 0.9, "hybrid": 0.85, "hybrid_rrf": 0.84, "dense": 0.8,
                               "lexical": 0.7, "bm25": 0.75},
                "recall_at_100": {"served": 0.6, "hybrid": 0.6, "dense": 0.5, "lexical": 0.4,
                                  "bm25": 0.3},
                "encoder_variants": {
                    "served": "query_encoder_static",
                    "variants": {
                        "text_encoder": {"sequences_per_s": {"8": 400.0, "16": 250.0},
                                         "ndcg_at_10": 0.85, "recall_at_100": 0.6,
                                         "fused_ndcg_at_10": 0.84, "dense_ndcg_at_10": 0.8,
                                         "overlap": 1.0, "passes": True},
                        "query_encoder_static": {"sequences_per_s": {"8": 90000.0, "16": 70000.0},
                                                 "ndcg_at_10": 0.86, "recall_at_100": 0.6,
                                                 "fused_ndcg_at_10": 0.85,
                                                 "dense_ndcg_at_10": 0.81, "overlap": 0.9,
                                                 "passes": True},
                        "query_encoder_shallow": {"sequences_per_s": {"8": 1500.0, "16": 900.0},
                                                  "ndcg_at_10": 0.8, "recall_at_100": 0.58,
                                                  "fused_ndcg_at_10": 0.79,
                                                  "dense_ndcg_at_10": 0.7, "overlap": 0.85,
                                                  "passes": False},
                    },
                },
                "teacher_build": {"ndcg_at_10": 0.891, "recall_at_100": 0.6},
            },
        },
        "catalog-only": {
            "search": {
                "ndcg_at_10": {"served": 0.66, "hybrid": 0.66, "dense": 0.5, "lexical": 0.6,
                               "bm25": 0.6},
                "recall_at_100": {"served": 0.9, "hybrid": 0.9, "dense": 0.8, "lexical": 0.85,
                                  "bm25": 0.8},
                "ndcg_at_10_by_kind": {
                    "typo": {"queries": 2, "served": 0.5, "hybrid": 0.5, "hybrid_rrf": 0.4,
                             "dense": 0.3, "lexical": 0.6, "bm25": 0.2},
                },
            }
        },
        "no-relevance": {"recommend": {"recall_at_10": 0.07}},
    },
}  # fmt: skip


def test_each_dataset_gets_its_search_rows_with_the_ratios_to_bm25_and_dense():
    lines = readme_table(REPORT).splitlines()
    figures = "0.9000 | 0.8500 | 0.8400 | 0.8000 | 0.7000 | 0.7500 | 1.200× | 1.125×"
    assert f"| synthetic | NDCG@10 | {figures} |" in lines
    figures = "0.6600 | 0.6600 | – | 0.5000 | 0.6000 | 0.6000 | 1.100× | 1.320×"
    assert f"| catalog-only | NDCG@10 | {figures} |" in lines
    figures = "0.6000 | 0.6000 | – | 0.5000 | 0.4000 | 0.3000 | 2.000× | 1.200×"
    assert f"| synthetic | recall@100 | {figures} |" in lines
    assert not any(line.startswith("| no-relevance | NDCG") for line in lines)


def test_recommend_rows_show_what_was_measured_and_a_dash_for_what_was_not():
    lines = readme_table(REPORT).splitlines()
    spread = "| 3 | 0.1570 (0.1500–0.1640) | 0.8241 (0.8182–0.8300) |"
    assert f"| synthetic | 0.1570 | 0.0500 | 0.8241 | 0.8241 {spread}" in lines
    assert "| no-relevance | 0.0700 | – | – | – | – | – | – |" in lines
    assert not any(line.startswith("| catalog-only | 0.") for line in lines)


def test_each_query_encoder_variant_gets_a_row_and_the_served_search_meets_the_teacher():
    lines = readme_table(REPORT).splitlines()
    assert (
        "| synthetic | `query_encoder_static` | 90,000 / 70,000 | 0.8600 | 0.6000 | 0.8500 "
        "| 0.8100 | 0.9000 | passes, served |"
    ) in lines
    assert (
        "| synthetic | `query_encoder_shallow` | 1,500 / 900 | 0.8000 | 0.5800 | 0.7900 "
        "| 0.7000 | 0.8500 | fails |"
    ) in lines
    assert (
        "| synthetic | `query_encoder_static` | 0.9000 | 0.8910 | 1.010× | 0.6000 | 0.6000 |"
    ) in lines
    assert not any(line.startswith("| catalog-only | `") for line in lines)


def test_queries_of_each_kind_get_a_row_where_the_report_has_them():
    lines = readme_table(REPORT).splitlines()
    assert "| typo | 2 | 0.5000 | 0.5000 | 0.4000 | 0.3000 | 0.6000 | 0.2000 |" in lines
    assert sum("by kind of query" in line for line in lines) == 1
