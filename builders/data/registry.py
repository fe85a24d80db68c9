"""Dataset sources by name."""

import inspect
from collections.abc import Callable

from . import files, marketplace, movielens, synthetic
from .dataset import Dataset

DEFAULT_DATASET = "synthetic"
SOURCES: dict[str, Callable[..., Dataset]] = {
    "synthetic": synthetic.generate,
    "movielens-100k": movielens.load,
    "files": files.load,
    "marketplace": marketplace.load,
}


def load_dataset(name: str = DEFAULT_DATASET, **params: object) -> Dataset:
    """Build the named dataset; `params` go to its source (see each source's signature)."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    signature = inspect.signature(source)
    try:
        signature.bind(**params)
    except TypeError as error:
        raise TypeError(f"dataset {name!r}: {error}; it takes {signature}") from None
    return source(**params)
