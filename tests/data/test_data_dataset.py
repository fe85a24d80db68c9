"""The Dataset type: schema checks, canonical order, fingerprint and the builder helpers."""

import numpy as np
import pandas as pd
import pytest

from builders import names
from builders.build import BuildOptions, selected_models
from builders.data import (
    Dataset,
    leave_last_n_out,
    relevance_from_logs,
    user_vocabulary,
    with_user_indexes,
)


def catalog(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "title": [f"Item {i}" for i in range(1, n + 1)],
            "category": ["Shoes", "Shoes", "Bags", "Bags"][:n],
            "brand": np.array(["Acme", None, "Acme", "Zeta"][:n], dtype=object),
            "price": [10.0, np.nan, 30.0, 40.0][:n],
        }
    )


def log(rows: list[tuple[int, int, str, int, str | None]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event", "timestamp", "query"])
    frame["query"] = frame["query"].astype(object).where(frame["query"].notna(), None)
    return frame.astype({"user_id": np.int64, "item_id": np.int64, "timestamp": np.int64})


LOG = [
    (1, 1, "view", 100, "shoes"),
    (1, 2, "click", 101, "shoes"),
    (1, 2, "purchase", 150, "shoes"),
    (1, 3, "view", 300, None),
    (2, 1, "view", 200, "red shoes"),
    (2, 3, "add_to_cart", 400, None),
    (3, 4, "view", 500, None),
]


def dataset(**changes: object) -> Dataset:
    tables: dict[str, object] = {"catalog": catalog(), "interactions": log(LOG)}
    tables.update(changes)
    return Dataset(name="test", **tables)  # type: ignore[arg-type]


def test_catalog_only_dataset_has_no_log_helpers() -> None:
    data = Dataset(name="test", catalog=catalog())
    assert not data.has_interactions
    assert data.user_histories() == {}
    assert data.item_popularity().tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="no interaction log"):
        data.split()
    with pytest.raises(ValueError, match="no interaction log"):
        data.sample_user_ids(3)
    with pytest.raises(ValueError, match="no queries"):
        data.sample_queries(3)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (catalog().drop(columns="brand"), "no 'brand' column"),
        (catalog().astype({"item_id": np.int32}), "item_id must be int64"),
        (catalog().assign(title=[None, "b", "c", "d"]), "title has missing values"),
        (catalog().assign(item_id=np.array([1, 1, 2, 3], dtype=np.int64)), "not unique"),
        (catalog().assign(price=["1", "2", "3", "4"]), "price must be float64"),
    ],
)
def test_bad_catalog_schema_is_rejected(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dataset(name="test", catalog=frame)


def test_log_must_use_known_events_and_items() -> None:
    with pytest.raises(ValueError, match="unknown event types"):
        dataset(interactions=log([(1, 1, "like", 1, None)]))
    with pytest.raises(ValueError, match="items not in the catalog"):
        dataset(interactions=log([(1, 99, "view", 1, None)]))
    bad_grade = pd.DataFrame({"query": ["q"], "item_id": np.array([1]), "grade": np.array([4])})
    with pytest.raises(ValueError, match="grades must be 1, 2 or 3"):
        dataset(relevance=bad_grade)


def test_tables_are_put_in_canonical_order() -> None:
    shuffled = dataset(
        catalog=catalog().iloc[[2, 0, 3, 1]], interactions=log(LOG).iloc[::-1].copy()
    )
    assert shuffled.catalog["item_id"].tolist() == [1, 2, 3, 4]
    assert shuffled.interactions["timestamp"].is_monotonic_increasing
    assert shuffled.fingerprint == dataset().fingerprint


def test_fingerprint_is_stable_and_follows_the_content() -> None:
    base = dataset()
    assert len(base.fingerprint) == 64
    assert dataset().fingerprint == base.fingerprint
    cheaper = catalog()
    cheaper.loc[0, "price"] = 9.99
    assert dataset(catalog=cheaper).fingerprint != base.fingerprint
    assert dataset(interactions=log(LOG[:-1])).fingerprint != base.fingerprint
    assert dataset(interactions=None).fingerprint != base.fingerprint
    with_brand = catalog()
    with_brand.loc[1, "brand"] = "Acme"
    assert dataset(catalog=with_brand).fingerprint != base.fingerprint
    # Bookkeeping fields are not content.
    assert dataset(params={"seed": 1}).fingerprint == base.fingerprint


def test_split_holds_out_each_users_last_interactions() -> None:
    train, test = dataset().split(holdout=1)
    assert test[["user_id", "item_id", "timestamp"]].values.tolist() == [[1, 3, 300], [2, 3, 400]]
    # User 3 has a single interaction: it stays in train.
    assert sorted(train["user_id"].tolist()) == [1, 1, 1, 2, 3]
    assert len(train) + len(test) == len(LOG)

    train, test = dataset().split(holdout=2)
    assert test[["user_id", "timestamp"]].values.tolist() == [[1, 150], [1, 300]]
    with pytest.raises(ValueError, match="at least 1"):
        dataset().split(holdout=0)


def test_split_breaks_timestamp_ties_by_row_order() -> None:
    tied = log([(1, 1, "view", 5, None), (1, 2, "view", 5, None), (1, 3, "view", 5, None)])
    assert leave_last_n_out(tied, 1).test["item_id"].tolist() == [3]
    assert leave_last_n_out(tied.iloc[::-1], 1).test["item_id"].tolist() == [1]


def test_users_are_indexed_by_their_first_event_not_by_their_ids() -> None:
    users = pd.DataFrame({"user_id": np.array([1, 2, 3, 9], dtype=np.int64)})  # 9: no events
    data = dataset(users=users)
    indexed, ids = with_user_indexes(data)
    assert ids.tolist() == [1, 2, 3]  # first events at 100, 200, 500
    assert indexed.fingerprint == data.fingerprint
    assert indexed.users["user_id"].tolist() == [1, 2, 3]  # 9 is served as an unknown user
    # Relabelled ids that sort the other way give the same indexed data.
    relabel = {1: 70, 2: 50, 3: 60, 9: 80}
    other = dataset(
        interactions=log([(relabel[u], *rest) for u, *rest in LOG]),
        users=users.assign(user_id=users["user_id"].map(relabel)),
    )
    other_indexed, other_ids = with_user_indexes(other)
    assert other_ids.tolist() == [70, 50, 60]
    pd.testing.assert_frame_equal(other_indexed.interactions, indexed.interactions)
    pd.testing.assert_frame_equal(other_indexed.users, indexed.users)
    assert user_vocabulary(indexed).tolist() == [1, 2, 3]


def test_users_whose_first_events_tie_fall_back_to_their_ids() -> None:
    tied = log([(5, 2, "view", 100, None), (4, 2, "view", 100, None), (6, 1, "view", 100, None)])
    _, ids = with_user_indexes(dataset(interactions=tied))
    assert ids.tolist() == [6, 4, 5]  # item 1 first, then ids 4 and 5 for the equal events
    catalog_only = Dataset(name="test", catalog=catalog())
    same, no_ids = with_user_indexes(catalog_only)
    assert same is catalog_only and len(no_ids) == 0


def test_item_popularity_counts_and_weights() -> None:
    data = dataset()
    assert data.item_popularity().to_dict() == {1: 2, 2: 2, 3: 2, 4: 1}
    weighted = data.item_popularity(weighted=True).to_dict()
    assert weighted == {1: 2.0, 2: 10.0, 3: 5.0, 4: 1.0}
    unseen = dataset(interactions=log(LOG[:3]))
    assert unseen.item_popularity().to_dict() == {1: 1, 2: 2, 3: 0, 4: 0}


def test_user_histories_are_in_time_order() -> None:
    histories = dataset(interactions=log(LOG).iloc[::-1].copy()).user_histories()
    assert {user: items.tolist() for user, items in histories.items()} == {
        1: [1, 2, 2, 3],
        2: [1, 3],
        3: [4],
    }


def test_a_log_without_queries_has_no_searches() -> None:
    assert dataset().has_searches
    no_queries = log([(u, i, e, t, None) for u, i, e, t, _ in LOG])
    assert not dataset(interactions=no_queries).has_searches
    assert not Dataset(name="test", catalog=catalog()).has_searches


def test_logged_searches_count_a_run_of_rows_once() -> None:
    assert dataset().logged_searches().tolist() == ["shoes", "red shoes"]
    repeated = LOG + [(1, 1, "view", 1000, "shoes")]  # a new search for the same text
    assert dataset(interactions=log(repeated)).logged_searches().tolist() == [
        "shoes",
        "red shoes",
        "shoes",
    ]


def test_sampling_is_seeded_and_follows_the_log() -> None:
    data = dataset()
    users = data.sample_user_ids(10_000, seed=3)
    assert np.array_equal(users, data.sample_user_ids(10_000, seed=3))
    shares = pd.Series(users).value_counts(normalize=True)
    assert shares[1] == pytest.approx(4 / 7, abs=0.02)
    assert shares[3] == pytest.approx(1 / 7, abs=0.02)
    queries = data.sample_queries(1000, seed=1)
    assert set(queries) == {"shoes", "red shoes"}
    assert queries == data.sample_queries(1000, seed=1)


def test_relevance_from_logs_keeps_the_best_event_per_query_and_item() -> None:
    grades = relevance_from_logs(log(LOG))
    assert grades is not None
    assert grades.values.tolist() == [["red shoes", 1, 1], ["shoes", 1, 1], ["shoes", 2, 3]]
    assert relevance_from_logs(log([(1, 1, "view", 1, None)])) is None


def test_a_build_without_logged_searches_serves_search_without_a_ranker(tmp_path) -> None:
    no_queries = dataset(interactions=log([(u, i, e, t, None) for u, i, e, t, _ in LOG]))
    models = selected_models(BuildOptions(repo=tmp_path), no_queries)
    assert names.SEARCH_RANKER not in models
    assert {names.RECOMMEND_RANKER, names.RANKING_FEATURES, names.SEARCH} <= set(models)
    assert names.SEARCH_RANKER in selected_models(BuildOptions(repo=tmp_path), dataset())
    only = BuildOptions(repo=tmp_path, only=(names.SEARCH_RANKER,))
    with pytest.raises(ValueError, match="search_ranker needs logged searches; test has none"):
        selected_models(only, no_queries)
