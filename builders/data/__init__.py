"""Dataset adapters: every source yields a `Dataset` with one schema (see README.md here).

For example:

from builders.data import load_dataset
dataset = load_dataset("synthetic", seed=7, n_items=50_000)
dataset = load_dataset("movielens-100k")
dataset = load_dataset("files", catalog="catalog.csv", interactions="events.parquet")
"""

from .dataset import (
    EVENT_GRADES,
    EVENT_WEIGHTS,
    BadRow,
    Dataset,
    FileReport,
    Split,
    ids_by_user_index,
    leave_last_n_out,
    relevance_from_logs,
    user_vocabulary,
    with_user_indexes,
)
from .files import DataValidationError
from .registry import DEFAULT_DATASET, SOURCES, load_dataset

__all__ = [
    "DEFAULT_DATASET",
    "EVENT_GRADES",
    "EVENT_WEIGHTS",
    "SOURCES",
    "BadRow",
    "DataValidationError",
    "Dataset",
    "FileReport",
    "Split",
    "ids_by_user_index",
    "leave_last_n_out",
    "load_dataset",
    "relevance_from_logs",
    "user_vocabulary",
    "with_user_indexes",
]
