"""The `marketplace` dataset: rule-graded queries over its committed catalog (pure, no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from builders.data import load_dataset, marketplace
from builders.data.marketplace import KINDS, QueryRule, grade, load_rules, relevance

TINY = pd.DataFrame(
    {
        "item_id": [1, 2, 3, 4, 5, 6],
        "title": ["a", "b", "c", "d", "e", "f"],
        "category": ["Drills", "Drills", "Drivers", "Drivers", "Hoses", "Drills"],
        "brand": ["Hartwell", "Brennan", "Hartwell", None, "Flexora", "Hartwell"],
        "price": [99.0, 79.0, 89.0, float("nan"), 30.0, 120.0],
        "voltage": ["20V", "20V", "20v", "12V", None, " 20V "],
    }
)


def rule(**fields) -> QueryRule:
    defaults = {"query": "q", "category": (), "attributes": (), "related": (), "kind": "exact"}
    return QueryRule(**(defaults | fields))


def test_grades_each_case():
    hartwell_20v = rule(
        category=("Drills",),
        attributes=(("brand", "hartwell"), ("voltage", "20V")),
        related=("Drivers",),
    )
    # 1, 6: category and both attributes (case and spaces ignored); 2: category only;
    # 3: related with both attributes; 4: related without; 5: neither.
    assert grade(TINY, hartwell_20v) == {1: 3, 2: 2, 3: 1, 6: 3}


def test_related_gives_nothing_without_attributes():
    assert grade(TINY, rule(category=("Drills",), related=("Drivers",))) == {1: 3, 2: 3, 6: 3}


def test_missing_attribute_values_do_not_match():
    assert grade(TINY, rule(category=("Hoses",), attributes=(("voltage", "20V"),))) == {5: 2}


def test_relevance_has_the_dataset_schema():
    rules = [
        rule(query="b", category=("Hoses",)),
        rule(query="a", category=("Drills",), attributes=(("voltage", "20V"),)),
    ]
    frame = relevance(TINY, rules)
    assert list(frame.columns) == ["query", "item_id", "grade"]
    assert frame.dtypes.to_dict() == {"query": object, "item_id": "int64", "grade": "int64"}
    assert frame.to_records(index=False).tolist() == [
        ("a", 1, 3),
        ("a", 2, 3),
        ("a", 6, 3),
        ("b", 5, 3),
    ]
    assert relevance(TINY, []).dtypes.to_dict() == frame.dtypes.to_dict()


GOOD = {
    "query": "hartwell drill",
    "category": ["Drills"],
    "attributes": {"brand": "Hartwell"},
    "related": ["Drivers"],
    "kind": "brand",
}


def write(tmp_path: Path, entries) -> Path:
    path = tmp_path / "queries.json"
    path.write_text(json.dumps(entries))
    return path


def test_load_rules_reads_a_valid_file(tmp_path):
    [loaded] = load_rules(write(tmp_path, [GOOD]), catalog=TINY)
    assert loaded == QueryRule(
        "hartwell drill", ("Drills",), (("brand", "Hartwell"),), ("Drivers",), "brand"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "fuzzy"}, "unknown kind 'fuzzy'"),
        ({"category": ["Saws"]}, "unknown category 'Saws'"),
        ({"related": ["Saws"]}, "unknown category 'Saws'"),
        ({"category": []}, "no category"),
        ({"category": "Drills"}, "category must be a list"),
        ({"attributes": {"colour": "red"}}, "unknown attribute column 'colour'"),
        ({"attributes": {"title": "drill"}}, "unknown attribute column 'title'"),
        ({"attributes": {"voltage": ""}}, "attribute 'voltage' must be non-empty text"),
        ({"grade": 3}, r"unknown \['grade'\]"),
        ({"query": ""}, "non-empty text"),
    ],
)
def test_load_rules_rejects_bad_rules(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_rules(write(tmp_path, [GOOD | change]), catalog=TINY)


def test_load_rules_rejects_missing_keys_and_duplicates(tmp_path):
    partial = {key: value for key, value in GOOD.items() if key != "related"}
    with pytest.raises(ValueError, match=r"query 1 .*missing keys \['related'\]"):
        load_rules(write(tmp_path, [partial]), catalog=TINY)
    with pytest.raises(ValueError, match="query 2 .*duplicated query"):
        load_rules(write(tmp_path, [GOOD, GOOD]), catalog=TINY)
    with pytest.raises(ValueError, match="expected a JSON list"):
        load_rules(write(tmp_path, GOOD), catalog=TINY)


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    dataset = load_dataset("files", catalog=marketplace.CATALOG)
    assert dataset.interactions is None
    assert [report.skipped for report in dataset.reports] == [0]
    return dataset.catalog


def test_committed_catalog_loads_through_the_files_source(catalog):
    assert 1500 <= len(catalog) <= 2500
    assert catalog["item_id"].tolist() == list(range(1, len(catalog) + 1))
    assert catalog["brand"].notna().all() and catalog["price"].notna().all()
    assert 30 <= catalog["category"].nunique() <= 45
    assert catalog["department"].nunique() == 8
    assert catalog["title"].is_unique


def test_every_committed_query_has_a_grade_3_item(catalog):
    rules = load_rules(marketplace.QUERIES, catalog=catalog)
    assert 100 <= len(rules) <= 150
    assert set(Counter(r.kind for r in rules)) == set(KINDS)
    without = [r.query for r in rules if 3 not in grade(catalog, r).values()]
    assert without == []
    frame = relevance(catalog, rules)
    assert set(frame["query"]) == {r.query for r in rules}
    assert frame["grade"].between(1, 3).all()


def test_make_catalog_regenerates_the_committed_csv(tmp_path):
    out = tmp_path / "catalog.csv"
    generate = [sys.executable, "-m", "builders.data.marketplace.generate", "--out", str(out)]
    subprocess.run(generate, check=True)
    assert out.read_bytes() == marketplace.CATALOG.read_bytes()


def test_the_dataset_is_the_catalog_with_its_graded_queries(catalog, tmp_path):
    dataset = load_dataset("marketplace")
    rules = load_rules(marketplace.QUERIES, catalog=catalog)
    graded = tmp_path / "relevance.csv"
    relevance(catalog, rules).to_csv(graded, index=False)
    as_files = load_dataset("files", catalog=marketplace.CATALOG, relevance=graded)
    assert dataset.name == "marketplace" and dataset.interactions is None
    assert dataset.fingerprint == as_files.fingerprint  # the same tables: the same builds
    assert dataset.query_kinds == {rule.query: rule.kind for rule in rules}
    assert set(dataset.relevance["query"]) == set(dataset.query_kinds)
