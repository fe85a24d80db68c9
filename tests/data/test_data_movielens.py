"""The movielens-100k source, read from the files inside the recbole package."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders.data import Dataset, load_dataset
from builders.data.movielens import package_directory

REPO = Path(__file__).resolve().parents[2]


def test_counts_match_movielens_100k(movielens: Dataset) -> None:
    assert len(movielens.catalog) == 1_682
    assert len(movielens.users) == 943
    assert len(movielens.interactions) == 100_000
    assert movielens.interactions["user_id"].nunique() == 943
    assert movielens.interactions["item_id"].nunique() == 1_682
    assert movielens.catalog["item_id"].tolist() == list(range(1, 1_683))


def test_mapping_to_the_common_schema(movielens: Dataset) -> None:
    toy_story = movielens.catalog.set_index("item_id").loc[1]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["category"] == "Animation"
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    assert toy_story["release_year"] == 1995
    assert movielens.catalog["brand"].isna().all()
    assert movielens.catalog["price"].isna().all()
    assert "Misérables, Les" in set(movielens.catalog["title"])  # UTF-8 read correctly

    log = movielens.interactions
    assert log["rating"].between(1, 5).all()
    assert (log["event"] == np.where(log["rating"] >= 4, "purchase", "view")).all()
    assert log["query"].isna().all()
    assert log["timestamp"].between(874_000_000, 894_000_000).all()
    assert movielens.relevance is None
    assert set(movielens.users.columns) == {"user_id", "age", "gender", "occupation", "zip_code"}
    assert movielens.users.set_index("user_id").loc[1, "occupation"] == "technician"


def test_fingerprint_is_stable(movielens: Dataset) -> None:
    assert load_dataset("movielens-100k").fingerprint == movielens.fingerprint


def test_recbole_is_located_not_imported() -> None:
    code = (
        "import sys; from builders.data import load_dataset; load_dataset('movielens-100k'); "
        "print('recbole' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
    assert package_directory().parts[-3:] == ("recbole", "dataset_example", "ml-100k")


def test_a_folder_without_the_files_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ml-100k.item").write_text("item_id:token\n")
    with pytest.raises(FileNotFoundError, match="missing MovieLens file.*ml-100k.inter"):
        load_dataset("movielens-100k", directory=tmp_path)
