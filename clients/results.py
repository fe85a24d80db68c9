"""Typed answers: the items with their scores and catalog fields, and who answered."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CATALOG_FIELDS = ("title", "category", "brand", "price")


@dataclass(frozen=True)
class Item:
    item_id: int
    score: float
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class Response:
    """A raw answer of any model: its outputs by name, and the version that answered."""

    model: str
    version: int
    outputs: Mapping[str, np.ndarray] = field(compare=False)
    endpoint: str = field(default="", compare=False)
    attempts: int = field(default=1, compare=False)


@dataclass(frozen=True)
class Result:
    """A `search` or `recommend` answer, best item first. Two results are equal when the
    model, the version, the items and the truncated flag are (not where or how it was asked)."""

    model: str
    version: int
    items: tuple[Item, ...]
    truncated: bool
    endpoint: str = field(default="", compare=False)
    attempts: int = field(default=1, compare=False)

    def to_dict(self) -> dict:
        return asdict(self)


class Catalog:
    """Item id -> catalog fields (title, category, brand, price), from a CSV or Parquet file
    such as the `catalog.parquet` in every pipeline version folder."""

    def __init__(self, rows: Mapping[int, Mapping]) -> None:
        self.rows = rows

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        import pandas as pd

        path = Path(path)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if "item_id" not in frame.columns:
            raise ValueError(f"{path}: the catalog has no item_id column")
        columns = [c for c in CATALOG_FIELDS if c in frame.columns]
        frame = frame.drop_duplicates("item_id").set_index("item_id")[columns]
        return cls(frame.to_dict("index"))

    def fields(self, item_id: int) -> dict:
        row = self.rows.get(item_id, {})
        return {name: None if _missing(row.get(name)) else row.get(name) for name in CATALOG_FIELDS}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def make_result(response: Response, catalog: Catalog | None = None) -> Result:
    """A pipeline's outputs (batch of 1) as a typed result."""
    item_ids = response.outputs["item_ids"][0]
    scores = response.outputs["scores"][0]
    items = tuple(
        Item(int(item_id), float(score), **(catalog.fields(int(item_id)) if catalog else {}))
        for item_id, score in zip(item_ids, scores)
    )
    return Result(
        model=response.model,
        version=response.version,
        items=items,
        truncated=bool(response.outputs["truncated"].reshape(-1)[0]),
        endpoint=response.endpoint,
        attempts=response.attempts,
    )
