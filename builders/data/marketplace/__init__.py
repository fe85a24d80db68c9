"""The `marketplace` dataset: a catalog that is not the synthetic one, with hand-written
search queries graded by rule, and no interaction log.

`load_dataset("marketplace")` (`python -m builders build --dataset marketplace`) reads
`catalog.csv` here (about 1,800 items in 41 product types of 8 departments: hardware, pet,
grocery, office, garden, automotive, baby, household; invented brands and model numbers)
through the `files` source's validation, and grades `queries.json` here, queries written as a
shopper would, each with a rule:

    {"query": "cordless drill 20v", "category": ["Cordless Drills"],
     "attributes": {"voltage": "20V"}, "related": ["Impact Drivers"], "kind": "exact"}

`kind` is one of KINDS: `exact` (the query's words appear in titles), `synonym` (shopper words
that titles do not use), `typo`, `brand` (a brand, or brand and type) or `model` (a model number,
full or partial).

Grading (attributes match the catalog column case-insensitively):

* 3: the item's category is in `category` and every named attribute matches;
* 2: the category is in `category`, not every attribute matches;
* 1: the category is in `related` and every named attribute matches (none without attributes);
* 0: anything else (left out of the results).

The dataset carries its graded queries as `Dataset.relevance` and each query's `kind` as
`Dataset.query_kinds`. `synonyms.txt` here is a synonyms file for its builds (`--synonyms`).
Regenerate the catalog (deterministic) with `python -m builders.data.marketplace.generate`.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from ..dataset import Dataset

FOLDER = Path(__file__).resolve().parent
CATALOG = FOLDER / "catalog.csv"
QUERIES = FOLDER / "queries.json"
SYNONYMS = FOLDER / "synonyms.txt"
KINDS = ("exact", "synonym", "typo", "brand", "model")
_KEYS = {"query", "category", "attributes", "related", "kind"}
_NOT_ATTRIBUTES = {"item_id", "title", "category", "price"}


@dataclass(frozen=True)
class QueryRule:
    """A query and what answers it: `attributes` are (column, value) pairs."""

    query: str
    category: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    related: tuple[str, ...]
    kind: str


def load_rules(path: str | Path = QUERIES, catalog: pd.DataFrame | None = None) -> list[QueryRule]:
    """Read and check a rules file against a catalog (default: the committed `CATALOG`).

    Raises ValueError naming the query at fault: a missing or unknown key, an unknown kind,
    a category or attribute column the catalog lacks, a duplicated query.
    """
    path = Path(path)
    if catalog is None:
        catalog = pd.read_csv(CATALOG, dtype=str, keep_default_na=False)
    categories = set(catalog["category"])
    columns = set(catalog.columns) - _NOT_ATTRIBUTES
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of query objects")
    rules: list[QueryRule] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: query {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        where = f"{where} ({entry.get('query')!r})"
        missing, unknown = _KEYS - set(entry), set(entry) - _KEYS
        if missing or unknown:
            raise ValueError(f"{where}: missing keys {sorted(missing)}, unknown {sorted(unknown)}")
        query = entry["query"]
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"{where}: the query must be non-empty text")
        if query in seen:
            raise ValueError(f"{where}: duplicated query")
        seen.add(query)
        if entry["kind"] not in KINDS:
            raise ValueError(f"{where}: unknown kind {entry['kind']!r}; expected one of {KINDS}")
        for key in ("category", "related"):
            if not isinstance(entry[key], list) or not all(isinstance(n, str) for n in entry[key]):
                raise ValueError(f"{where}: {key} must be a list of product types")
        if not entry["category"]:
            raise ValueError(f"{where}: no category")
        for name in (*entry["category"], *entry["related"]):
            if name not in categories:
                raise ValueError(f"{where}: unknown category {name!r}")
        attributes = entry["attributes"]
        if not isinstance(attributes, dict):
            raise ValueError(f"{where}: attributes must be an object of column -> value")
        for column, value in attributes.items():
            if column not in columns:
                raise ValueError(
                    f"{where}: unknown attribute column {column!r}; "
                    f"expected one of {sorted(columns)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: attribute {column!r} must be non-empty text")
        rules.append(
            QueryRule(
                query=query,
                category=tuple(entry["category"]),
                attributes=tuple(attributes.items()),
                related=tuple(entry["related"]),
                kind=entry["kind"],
            )
        )
    return rules


def grade(catalog: pd.DataFrame, rule: QueryRule) -> dict[int, int]:
    """Item id -> grade (1-3) for one rule; items of grade 0 are left out."""
    category = catalog["category"]
    matches = np.ones(len(catalog), dtype=bool)
    for column, value in rule.attributes:
        if column not in catalog.columns:
            raise ValueError(f"query {rule.query!r}: the catalog has no {column!r} column")
        text = catalog[column].fillna("").astype(str).str.strip().str.casefold()
        matches &= (text == value.strip().casefold()).to_numpy()
    in_category = category.isin(rule.category).to_numpy()
    in_related = category.isin(rule.related).to_numpy() & bool(rule.attributes)
    grades = np.select(
        [in_category & matches, in_category, in_related & matches], [3, 2, 1], default=0
    )
    ids = catalog["item_id"].to_numpy()
    return {int(i): int(g) for i, g in zip(ids[grades > 0], grades[grades > 0])}


def relevance(catalog: pd.DataFrame, rules: list[QueryRule]) -> pd.DataFrame:
    """Graded relevance of every rule: `query`, `item_id`, `grade` (int64), sorted by query
    then item, as `Dataset.relevance`."""
    rows = [(rule.query, item, g) for rule in rules for item, g in grade(catalog, rule).items()]
    frame = pd.DataFrame(rows, columns=["query", "item_id", "grade"])
    frame = frame.astype({"query": object, "item_id": np.int64, "grade": np.int64})
    return frame.sort_values(["query", "item_id"], kind="stable").reset_index(drop=True)


def load(catalog: str | Path = CATALOG, queries: str | Path = QUERIES) -> Dataset:
    """The catalog (checked as the `files` source checks one) with `queries` graded by rule as
    its relevance, and each query's kind in `query_kinds`."""
    plain = files.load(catalog)
    rules = load_rules(queries, plain.catalog)
    return replace(
        plain,
        name="marketplace",
        relevance=relevance(plain.catalog, rules),
        params={"catalog": str(catalog), "queries": str(queries)},
        query_kinds={rule.query: rule.kind for rule in rules},
    )
