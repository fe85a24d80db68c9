"""Choosing a source by name."""

import pytest

from builders.data import DEFAULT_DATASET, SOURCES, load_dataset


def test_sources_and_default() -> None:
    assert set(SOURCES) == {"synthetic", "movielens-100k", "files", "marketplace"}
    assert DEFAULT_DATASET == "synthetic"
    data = load_dataset(n_items=300, n_users=20)
    assert data.name == "synthetic"
    assert len(data.catalog) == 300


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("amazon-reviews")
    assert str(error.value) == (
        "unknown dataset 'amazon-reviews'; "
        "valid names: files, marketplace, movielens-100k, synthetic"
    )


def test_unknown_parameter_names_the_source_and_its_signature() -> None:
    with pytest.raises(TypeError, match=r"dataset 'synthetic': .*'n_products'.*n_items"):
        load_dataset("synthetic", n_products=10)
    with pytest.raises(TypeError, match=r"dataset 'files': .*catalog"):
        load_dataset("files")
