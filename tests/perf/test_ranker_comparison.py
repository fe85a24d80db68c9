"""`python -m perf.evaluation.quality --rankers`: the comparison merges into a results file and the
README's table comes from it."""

import json

from perf.evaluation import quality

FIGURES = {
    "search_ndcg_at_10": {"dcn": 0.9242, "lambdamart": 0.93},
    "recommend_auc": {"dcn": 0.8642, "lambdamart": 0.85},
}


def test_the_comparison_merges_without_touching_the_other_figures():
    report = {
        "date": "2026-12-05",
        "datasets": {
            "synthetic": {
                "search": {"ndcg_at_10": {"served": 0.9242}},
                "recommend": {"recall_at_10": 0.15},
            },
            "catalog-only": {"search": {"ndcg_at_10": {"served": 0.92}}},
        },
    }
    before = json.loads(json.dumps(report))
    merged = quality.merge_rankers(report, FIGURES, started=0.0)
    synthetic = merged["datasets"]["synthetic"]
    assert synthetic["search"]["ranker_ndcg_at_10"] == FIGURES["search_ndcg_at_10"]
    assert synthetic["recommend"]["ranker_auc"] == FIGURES["recommend_auc"]
    assert (
        synthetic["search"]["ndcg_at_10"] == before["datasets"]["synthetic"]["search"]["ndcg_at_10"]
    )
    assert merged["datasets"]["catalog-only"] == before["datasets"]["catalog-only"]
    assert merged["date"] == "2026-12-05"
    assert set(merged["ranker_comparison"]) == {"date", "machine", "seconds"}


def test_the_table_puts_the_rankers_side_by_side():
    table = quality.ranker_table(quality.merge_rankers({}, FIGURES, started=0.0))
    assert "| search NDCG@10 | 0.9242 | 0.9300 |" in table
    assert "| recommend AUC | 0.8642 | 0.8500 |" in table
