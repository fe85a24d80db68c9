"""The common dataset every source produces, and the helpers model builders share."""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import pandas as pd

#: Event types of the interaction log, with their weight as implicit feedback.
EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
)
#: The search relevance grade an event implies for the query it followed.
EVENT_GRADES: Mapping[str, int] = MappingProxyType(
    {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 3}
)

# Columns every table has, with the kind of values they hold: "int" is int64, "float" float64
# (NaN when unknown), "text" str, "text?" str or None. Sources may add further columns.
CATALOG_COLUMNS = {
    "item_id": "int",
    "title": "text",
    "category": "text",
    "brand": "text?",
    "price": "float",
}
INTERACTION_COLUMNS = {
    "user_id": "int",
    "item_id": "int",
    "event": "text",
    "timestamp": "int",
    "query": "text?",
}
USER_COLUMNS = {"user_id": "int"}
RELEVANCE_COLUMNS = {"query": "text", "item_id": "int", "grade": "int"}

# The canonical row order of each table: the fingerprint depends on it.
_SORT_KEYS = {
    "catalog": ["item_id"],
    "interactions": ["timestamp", "user_id", "item_id"],
    "users": ["user_id"],
    "relevance": ["query", "item_id"],
}


class Split(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class BadRow:
    """A rejected input row. `line` is the CSV line (header = 1) or the 1-based Parquet row."""

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        unit = "row " if self.file.suffix.lower() in {".parquet", ".pq"} else ""
        return f"{self.file}:{unit}{self.line}: {self.reason}"


@dataclass(frozen=True)
class FileReport:
    """What validating one input file found: its row count and the rows that were skipped."""

    file: Path
    rows: int
    bad_rows: tuple[BadRow, ...]

    @property
    def skipped(self) -> int:
        return len(self.bad_rows)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A catalog, optionally with an interaction log, users and graded search relevance.

    Tables are pandas DataFrames in canonical row order (see `_SORT_KEYS`); treat them as
    read-only. `fingerprint` is a sha256 over their content, computed at construction.
    `params` records how the source was asked for (seed, sizes, paths); `reports` holds what
    file validation skipped; `query_kinds` names the kind of each graded query, where the
    source knows it (`marketplace`: exact, synonym, typo, brand, model). None of them enters
    the fingerprint.
    """

    name: str
    catalog: pd.DataFrame
    interactions: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    relevance: pd.DataFrame | None = None
    params: Mapping[str, object] = field(default_factory=dict)
    reports: tuple[FileReport, ...] = ()
    query_kinds: Mapping[str, str] | None = None
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        tables = {
            "catalog": (self.catalog, CATALOG_COLUMNS),
            "interactions": (self.interactions, INTERACTION_COLUMNS),
            "users": (self.users, USER_COLUMNS),
            "relevance": (self.relevance, RELEVANCE_COLUMNS),
        }
        for table_name, (frame, columns) in tables.items():
            if frame is not None:
                _check_columns(table_name, frame, columns)
                ordered = frame.sort_values(_SORT_KEYS[table_name], kind="stable")
                object.__setattr__(self, table_name, ordered.reset_index(drop=True))
        self._check_references()
        object.__setattr__(self, "fingerprint", _fingerprint(self._tables()))

    def _tables(self) -> dict[str, pd.DataFrame | None]:
        return {
            "catalog": self.catalog,
            "interactions": self.interactions,
            "users": self.users,
            "relevance": self.relevance,
        }

    def _check_references(self) -> None:
        if not self.catalog["item_id"].is_unique:
            raise ValueError(f"{self.name}: catalog item_id values are not unique")
        known_items = self.catalog["item_id"]
        if self.interactions is not None:
            unknown_events = set(self.interactions["event"].unique()) - set(EVENT_WEIGHTS)
            if unknown_events:
                raise ValueError(f"{self.name}: unknown event types {sorted(unknown_events)}")
            if not self.interactions["item_id"].isin(known_items).all():
                raise ValueError(f"{self.name}: interactions refer to items not in the catalog")
        if self.users is not None and not self.users["user_id"].is_unique:
            raise ValueError(f"{self.name}: users user_id values are not unique")
        if self.relevance is not None:
            if not self.relevance["grade"].between(1, 3).all():
                raise ValueError(f"{self.name}: relevance grades must be 1, 2 or 3")
            if not self.relevance["item_id"].isin(known_items).all():
                raise ValueError(f"{self.name}: relevance refers to items not in the catalog")

    @property
    def has_interactions(self) -> bool:
        return self.interactions is not None

    @property
    def has_searches(self) -> bool:
        """Whether the interaction log holds searches (rows with a query) to train on."""
        return self.has_interactions and bool(self.interactions["query"].notna().any())

    def split(self, holdout: int = 1) -> Split:
        """Leave each user's last `holdout` interactions out; see `leave_last_n_out`."""
        return leave_last_n_out(self._require_interactions(), holdout)

    def item_popularity(self, weighted: bool = False) -> pd.Series:
        """Interactions per catalog item (0 for unseen items, and for all without a log).

        With `weighted`, each interaction counts its EVENT_WEIGHTS weight instead of 1.
        The Series is indexed by item_id in catalog order.
        """
        index = pd.Index(self.catalog["item_id"], name="item_id")
        if self.interactions is None:
            return pd.Series(0.0 if weighted else 0, index=index, name="popularity")
        items = self.interactions["item_id"]
        if weighted:
            totals = self.interactions["event"].map(EVENT_WEIGHTS).groupby(items).sum()
        else:
            totals = items.value_counts()
        return totals.reindex(index, fill_value=0).rename("popularity")

    def user_histories(self) -> dict[int, np.ndarray]:
        """Item ids each user interacted with, oldest first, repeats kept."""
        if self.interactions is None:
            return {}
        ordered = self.interactions.sort_values(["user_id", "timestamp"], kind="stable")
        users = ordered["user_id"].to_numpy()
        items = ordered["item_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        return dict(zip(users[starts].tolist(), np.split(items, starts[1:]), strict=True))

    def logged_searches(self) -> pd.Series:
        """The query of every logged search, in time order.

        A search is a run of one user's consecutive interactions that carry the same query, so a
        query counts once however many results the user then viewed.
        """
        if self.interactions is None:
            return pd.Series([], dtype=object, name="query")
        ordered = self.interactions.sort_values(["user_id", "timestamp"], kind="stable")
        queries = ordered["query"]
        users = ordered["user_id"]
        starts_search = queries.ne(queries.shift()) | users.ne(users.shift())
        searches = ordered.loc[starts_search & queries.notna()]
        return searches.sort_values("timestamp", kind="stable")["query"].reset_index(drop=True)

    def sample_queries(self, n: int, seed: int = 0) -> list[str]:
        """Draw `n` query strings with their logged frequency (for load tests)."""
        searches = self.logged_searches().to_numpy()
        if len(searches) == 0:
            raise ValueError(f"{self.name}: the interaction log has no queries to sample")
        return np.random.default_rng(seed).choice(searches, size=n).tolist()

    def sample_user_ids(self, n: int, seed: int = 0) -> np.ndarray:
        """Draw `n` user ids in proportion to their logged activity (for load tests)."""
        return np.random.default_rng(seed).choice(
            self._require_interactions()["user_id"].to_numpy(), size=n
        )

    def _require_interactions(self) -> pd.DataFrame:
        if self.interactions is None:
            raise ValueError(f"{self.name}: this dataset has no interaction log")
        return self.interactions


def user_vocabulary(dataset: Dataset) -> np.ndarray:
    """Sorted user ids of the users table and the log: user index = position + 1."""
    parts = [np.empty(0, dtype=np.int64)]
    if dataset.users is not None:
        parts.append(dataset.users["user_id"].to_numpy(np.int64))
    if dataset.interactions is not None:
        parts.append(dataset.interactions["user_id"].to_numpy(np.int64))
    return np.unique(np.concatenate(parts))


def with_user_indexes(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """`dataset` with every logged user's id replaced by its user index (1..n), and the ids
    in index order (index i + 1 is `ids[i]`).

    Users are indexed by what they did, not by what their ids are: in order of their first
    logged event (its timestamp, item and event). So what a build trains on the result does
    not depend on the ids, and a build whose ids are pseudonymised trains the plain build's
    models (users whose first events agree in all three fall back to the order of their
    ids). Users without events leave the users table: nothing is learnt about them, and they
    are served as unknown users. The result keeps `dataset`'s fingerprint: it stands for the
    same data.
    """
    if dataset.interactions is None:
        return dataset, np.empty(0, dtype=np.int64)
    firsts = dataset.interactions.drop_duplicates("user_id")  # canonical order: by time
    by_first_event = firsts.sort_values(["timestamp", "item_id", "event", "user_id"], kind="stable")
    ordered = by_first_event["user_id"].to_numpy(np.int64)
    ids = np.sort(ordered)
    index_of = np.empty(len(ids), dtype=np.int64)
    index_of[np.searchsorted(ids, ordered)] = np.arange(1, len(ids) + 1)

    def indexed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(user_id=index_of[np.searchsorted(ids, frame["user_id"].to_numpy())])

    users = dataset.users
    if users is not None:
        users = indexed(users[users["user_id"].isin(ids)])
    relabelled = replace(dataset, interactions=indexed(dataset.interactions), users=users)
    object.__setattr__(relabelled, "fingerprint", dataset.fingerprint)
    return relabelled, ordered


def ids_by_user_index(user_ids: np.ndarray) -> np.ndarray:
    """User ids [n + 1, 1] in user-index order for `user_ids` in index order: row 0 is an id
    not among them (the unknown user's row), row i + 1 is `user_ids[i]`."""
    unknown = int(user_ids.max(initial=0)) + 1
    return np.concatenate([[unknown], user_ids]).astype(np.int64).reshape(-1, 1)


def leave_last_n_out(interactions: pd.DataFrame, n: int = 1) -> Split:
    """Hold out each user's last `n` interactions by timestamp as the test set.

    Users with `n` or fewer interactions stay wholly in train. Equal timestamps keep the frame's
    row order, so the split is deterministic. Both parts are sorted by user, then time.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    per_user = ordered.groupby("user_id", sort=False)
    is_test = (per_user.cumcount(ascending=False) < n) & (per_user["user_id"].transform("size") > n)
    return Split(ordered[~is_test].reset_index(drop=True), ordered[is_test].reset_index(drop=True))


def relevance_from_logs(interactions: pd.DataFrame) -> pd.DataFrame | None:
    """Graded relevance from logged searches: each (query, item) pair takes the highest
    EVENT_GRADES grade of the events that followed the query. None when no row has a query."""
    searched = interactions.loc[interactions["query"].notna(), ["query", "item_id", "event"]]
    if searched.empty:
        return None
    grades = searched.assign(grade=searched["event"].map(EVENT_GRADES).astype("int64"))
    best = grades.groupby(["query", "item_id"], as_index=False, sort=True)["grade"].max()
    return best[["query", "item_id", "grade"]]


def _check_columns(table: str, frame: pd.DataFrame, columns: Mapping[str, str]) -> None:
    for column, kind in columns.items():
        if column not in frame.columns:
            raise ValueError(f"{table} has no {column!r} column")
        series = frame[column]
        if kind == "int" and series.dtype != np.int64:
            raise ValueError(f"{table}.{column} must be int64, not {series.dtype}")
        if kind == "float" and series.dtype != np.float64:
            raise ValueError(f"{table}.{column} must be float64, not {series.dtype}")
        if kind.startswith("text") and series.dtype != object:
            raise ValueError(f"{table}.{column} must hold strings, not {series.dtype}")
        if kind == "text" and series.isna().any():
            raise ValueError(f"{table}.{column} has missing values")


def _fingerprint(tables: Mapping[str, pd.DataFrame | None]) -> str:
    digest = hashlib.sha256()
    for name, frame in tables.items():
        if frame is None:
            digest.update(f"{name}: none\n".encode())
            continue
        columns = sorted(frame.columns)
        header = ",".join(f"{column}:{frame[column].dtype}" for column in columns)
        digest.update(f"{name}: {len(frame)} rows: {header}\n".encode())
        row_hashes = pd.util.hash_pandas_object(frame[columns], index=False)
        digest.update(row_hashes.to_numpy().tobytes())
    return digest.hexdigest()
