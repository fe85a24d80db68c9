"""The synthetic source: determinism, schema, realism of the logs, relevance, scale."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from builders.data import EVENT_WEIGHTS, Dataset, load_dataset
from builders.data.synthetic import LOG_DAYS, START_TIMESTAMP
from builders.data.taxonomy import ATTRIBUTE_KINDS, BRANDS, LEAVES

REPO = Path(__file__).resolve().parents[2]
SMALL = {"n_items": 2_000, "n_users": 300}
NOUN_CATEGORY = {noun: leaf.name for leaf in LEAVES for noun in leaf.nouns}
CANONICAL_NOUNS = {leaf.nouns[0] for leaf in LEAVES}
COLORS = {color for leaf in LEAVES for color in leaf.colors}
KNOWN_WORDS = {
    word
    for text in [
        *NOUN_CATEGORY,
        *(brand for brands in BRANDS.values() for brand in brands),
        *(value for leaf in LEAVES for kind in ATTRIBUTE_KINDS for value in leaf.values(kind)),
    ]
    for word in text.lower().split()
}


def query_noun(query: str) -> str | None:
    """The category noun a query ends with (the longest that fits), if any."""
    nouns = [noun for noun in NOUN_CATEGORY if query == noun or query.endswith(" " + noun)]
    return max(nouns, key=len, default=None)


def has_typo(query: str) -> bool:
    return any(word not in KNOWN_WORDS for word in query.split())


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = load_dataset("synthetic", seed=5, **SMALL)
    again = load_dataset("synthetic", seed=5, **SMALL)
    other = load_dataset("synthetic", seed=6, **SMALL)
    assert again.fingerprint == first.fingerprint
    for table in ("catalog", "interactions", "users", "relevance"):
        pd.testing.assert_frame_equal(getattr(first, table), getattr(again, table))
    assert other.fingerprint != first.fingerprint
    assert not other.catalog["title"].equals(first.catalog["title"])


def test_fingerprint_is_the_same_in_a_fresh_interpreter(synthetic: Dataset) -> None:
    code = "from builders.data import load_dataset; print(load_dataset().fingerprint)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == synthetic.fingerprint


def test_catalog_schema_and_content(synthetic: Dataset) -> None:
    items = synthetic.catalog
    assert len(items) == 10_000
    assert items["item_id"].tolist() == list(range(1, 10_001))
    assert items.dtypes["price"] == np.float64
    for column in ("title", "category", "category_path", "brand", *ATTRIBUTE_KINDS):
        assert items[column].dtype == object
    assert items[["title", "category", "category_path", "brand", "price"]].notna().all().all()
    assert (items["price"] > 0).all()
    assert set(items["category"]) == {leaf.name for leaf in LEAVES}
    assert (items["category_path"].str.split(" > ").str[1] == items["category"]).all()
    leaf_by_name = {leaf.name: leaf for leaf in LEAVES}
    for row in items.sample(200, random_state=0).itertuples():
        leaf = leaf_by_name[row.category]
        assert row.brand in BRANDS[leaf.department]
        assert row.title.startswith(row.brand + " ")
        assert leaf.nouns[0].title() in row.title
        if row.color is not None:
            assert row.color in leaf.colors
            assert row.color.title() in row.title
    # Prices spread per category around very different medians.
    medians = items.groupby("category")["price"].median()
    assert medians["Laptops"] > 10 * medians["T-Shirts"]
    spread = items.groupby("category")["price"].quantile(0.9) / medians
    assert (spread > 1.2).all()


def test_log_schema_and_content(synthetic: Dataset) -> None:
    log = synthetic.interactions
    assert log is not None
    assert len(log) > 40_000
    assert set(log["event"]) == set(EVENT_WEIGHTS)
    assert log["item_id"].isin(synthetic.catalog["item_id"]).all()
    assert log["user_id"].isin(synthetic.users["user_id"]).all()
    last_day_ends = START_TIMESTAMP + (LOG_DAYS + 1) * 86_400
    assert log["timestamp"].between(START_TIMESTAMP, last_day_ends).all()
    # About 70% of sessions search; a session's rows share its query (or its lack of one).
    per_session = log.groupby("session_id")["query"]
    assert (per_session.nunique(dropna=False) == 1).all()
    searched = per_session.first().notna().mean()
    assert 0.65 < searched < 0.75
    # The funnel narrows: views > clicks > carts and purchases.
    counts = log["event"].value_counts()
    assert counts["view"] > counts["click"] > counts["purchase"] > 0
    assert counts["click"] > counts["add_to_cart"] > 0


def test_users_have_latent_preferences(synthetic: Dataset) -> None:
    users = synthetic.users
    assert users is not None
    assert len(users) == 2_000
    assert users["activity"].sum() == pytest.approx(1.0)
    assert set(users["favorite_category"]) <= {leaf.name for leaf in LEAVES}
    # Users mostly shop their favourite category.
    log = synthetic.interactions.merge(users, on="user_id")
    categories = synthetic.catalog.set_index("item_id")["category"]
    in_favourite = (log["item_id"].map(categories) == log["favorite_category"]).mean()
    assert in_favourite > 0.45


def test_preferences_drive_purchases(synthetic: Dataset) -> None:
    log = synthetic.interactions.merge(synthetic.users, on="user_id")
    items = synthetic.catalog.set_index("item_id")
    log["favourite_brand"] = log["item_id"].map(items["brand"]) == log["favorite_brand"]
    purchase_rate = (log["event"] == "purchase").groupby(log["favourite_brand"]).mean()
    assert purchase_rate[True] > 1.3 * purchase_rate[False]


def test_item_popularity_and_user_activity_are_skewed(synthetic: Dataset) -> None:
    popularity = synthetic.item_popularity().sort_values(ascending=False).to_numpy()
    top_percent = popularity[: len(popularity) // 100].sum() / popularity.sum()
    assert top_percent > 0.2  # 20x the uniform share
    # Rank-frequency on log-log axes falls like a power law.
    ranks = np.arange(1, 501)
    slope = np.polyfit(np.log(ranks), np.log(popularity[:500]), 1)[0]
    assert slope < -0.5

    activity = synthetic.interactions["user_id"].value_counts().to_numpy()
    assert activity[: len(activity) // 10].sum() / activity.sum() > 0.4
    sampled = pd.Series(synthetic.sample_user_ids(20_000, seed=1)).value_counts().to_numpy()
    assert sampled[: len(sampled) // 10].sum() / sampled.sum() > 0.4


def test_queries_use_synonyms_and_carry_typos(synthetic: Dataset) -> None:
    queries = synthetic.logged_searches()
    assert len(queries) > 10_000
    nouns = queries.map(query_noun)
    synonyms = nouns.dropna().map(lambda noun: noun not in CANONICAL_NOUNS)
    assert 0.3 < synonyms.mean() < 0.8
    running = set(nouns[nouns.map(NOUN_CATEGORY.get) == "Running Shoes"])
    assert {"running shoes", "sneakers", "trainers"} <= running
    typo_share = queries.map(has_typo).mean()
    assert 0.04 < typo_share < 0.12
    assert (queries == queries.str.lower()).all()


def test_queries_without_typos_when_asked() -> None:
    data = load_dataset("synthetic", seed=1, typo_rate=0.0, **SMALL)
    queries = data.logged_searches()
    assert len(queries) > 1000
    assert not queries.map(has_typo).any()
    assert queries.map(query_noun).notna().all()


def test_sample_queries_follow_logged_frequency(synthetic: Dataset) -> None:
    logged = synthetic.logged_searches().value_counts(normalize=True)
    sample = pd.Series(synthetic.sample_queries(50_000, seed=2)).value_counts(normalize=True)
    assert set(sample.index) <= set(logged.index)
    top = logged.index[0]
    assert sample[top] == pytest.approx(logged[top], rel=0.25)
    assert synthetic.sample_queries(5, seed=9) == synthetic.sample_queries(5, seed=9)


def test_relevance_grades_follow_category_and_attributes(synthetic: Dataset) -> None:
    relevance = synthetic.relevance
    assert relevance is not None
    assert relevance["query"].nunique() == 300
    assert set(relevance["query"]) <= set(synthetic.logged_searches())
    assert set(relevance["grade"]) == {1, 2, 3}
    items = synthetic.catalog.set_index("item_id")
    category_sizes = items["category"].value_counts()
    graded = relevance.join(items[["category", "category_path", "color"]], on="item_id")
    for query, rows in graded.groupby("query"):
        leaf_rows = rows[rows["grade"] >= 2]
        assert (rows["grade"] == 3).any(), query
        assert leaf_rows["category"].nunique() == 1, query
        category = leaf_rows["category"].iloc[0]
        assert len(leaf_rows) == category_sizes[category], query
        department = leaf_rows["category_path"].iloc[0].split(" > ")[0]
        partial = rows[rows["grade"] == 1]
        assert (partial["category"] != category).all(), query
        assert partial["category_path"].str.startswith(department + " > ").all(), query
        if not has_typo(query):
            assert NOUN_CATEGORY[query_noun(query)] == category, query
            named_colors = [word for word in query.split() if word in COLORS]
            if len(named_colors) == 1:
                exact = rows[rows["grade"] == 3]
                assert (exact["color"] == named_colors[0]).all(), query
                assert (partial["color"] == named_colors[0]).all(), query


@pytest.mark.slow
def test_a_million_items_build(capfd: pytest.CaptureFixture[str]) -> None:
    data = load_dataset("synthetic", n_items=1_000_000)
    assert len(data.catalog) == 1_000_000
    assert data.catalog["item_id"].is_unique
    assert data.catalog["title"].str.len().min() > 10
    assert set(data.catalog["category"]) == {leaf.name for leaf in LEAVES}
    assert data.interactions["item_id"].isin(data.catalog["item_id"]).all()
    assert "synthetic: catalog of 1,000,000 items" in capfd.readouterr().err


def test_searches_see_an_engines_ranked_results_with_position_bias(synthetic: Dataset) -> None:
    log = synthetic.interactions
    searched = log[log["query"].notna()]
    assert (log.loc[log["query"].isna(), "position"] == 0).all()
    assert searched["position"].between(1, 24).all()
    # The engine searches the whole catalog: sessions also open other categories' items
    # (rarely: users want them much less)...
    category = synthetic.catalog.set_index("item_id")["category"]
    categories = searched.assign(category=category.loc[searched["item_id"]].to_numpy())
    mixed = categories.groupby("session_id")["category"].nunique() > 1
    assert 0.02 < mixed.mean() < 0.5
    # ... and the top of the list is seen and engaged with more often than the rest.
    engaged = searched["event"] != "view"
    by_position = engaged.groupby(searched["position"]).agg(["mean", "size"])
    assert by_position.loc[1, "mean"] > by_position.loc[8:, "mean"].mean()
    assert by_position.loc[1, "size"] > 2 * by_position.loc[5, "size"]
