import pytest

from builders.data import Dataset, load_dataset


@pytest.fixture(scope="session")
def synthetic() -> Dataset:
    """The default synthetic dataset (seed 0, about 10k items)."""
    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def movielens() -> Dataset:
    return load_dataset("movielens-100k")
