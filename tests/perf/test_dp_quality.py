"""`python -m perf.evaluation.quality --dp`: the DP rows merge into a results file without
touching the rest, and the README's table comes from them."""

import json

from perf.evaluation import quality

PLAN = {"noise_multiplier": 1.234, "epsilon_spent": 0.99}
ROWS = [
    {"epsilon": None, "recall_at_10": 0.15, "popularity_recall_at_10": 0.065, "auc": 0.86},
    {
        "epsilon": 1.0,
        "recall_at_10": 0.04,
        "popularity_recall_at_10": 0.065,
        "auc": 0.8,
        "two_tower": PLAN,
        "ranker": PLAN | {"noise_multiplier": 0.9},
    },
]


def test_the_dp_rows_merge_without_touching_the_other_figures():
    report = {
        "date": "2026-12-05",
        "datasets": {"synthetic": {"recommend": {"recall_at_10": 0.15}}, "movielens-100k": {}},
    }
    before = json.loads(json.dumps(report))
    merged = quality.merge_dp(report, ROWS, started=0.0)
    assert merged["datasets"]["synthetic"]["recommend"] == {"recall_at_10": 0.15, "dp": ROWS}
    assert merged["datasets"]["movielens-100k"] == before["datasets"]["movielens-100k"]
    assert merged["date"] == "2026-12-05"
    assert set(merged["dp_comparison"]) == {"date", "machine", "seconds"}


def test_the_table_has_a_row_per_epsilon_after_the_non_private_one():
    lines = quality.dp_table(quality.merge_dp({}, ROWS, started=0.0)).splitlines()
    assert lines[2] == "| no DP | – | 0.1500 | 0.0650 | 0.8600 |"
    assert lines[3] == "| 1 | 1.23 / 0.90 | 0.0400 | 0.0650 | 0.8000 |"
    assert len(lines) == 4
