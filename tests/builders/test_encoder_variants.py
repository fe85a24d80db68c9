"""The query encoder variants' gate: the verdict, the default choice, held-out queries."""

import numpy as np
import pytest

from builders import encoder_variants, names
from builders.data import load_dataset
from builders.encoder_variants import (
    RELATIVE_TOLERANCE,
    choose,
    gate_failures,
    grades_by_index,
    overlap,
    search_quality,
)
from builders.ranking_metrics import ndcg, recall


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic", seed=5, n_items=400, n_users=60)


def test_overlap():
    assert overlap(np.array([[0, 1], [3, 2]]), np.array([[1, 0], [3, 1]])) == 0.75


def test_ndcg_and_recall():
    assert ndcg([3, 1, 2], {3: 3, 1: 2}) == pytest.approx(1.0)
    assert ndcg([1, 3], {3: 3, 1: 2}) < 1.0
    assert ndcg([5, 6], {}) == 0.0
    assert recall([7, 3, 1], {3: 3, 1: 2, 4: 3}, k=2) == 0.5


def teacher_row(ndcg_at_10=0.80, recall_at_100=0.90):
    return {"ndcg_at_10": ndcg_at_10, "recall_at_100": recall_at_100}


def test_the_gate_passes_within_one_percent_of_the_teacher():
    teacher = teacher_row()
    floor = 1 - RELATIVE_TOLERANCE
    assert RELATIVE_TOLERANCE == 0.01
    assert gate_failures(teacher_row(0.80 * floor, 0.90 * floor), teacher) == []
    assert gate_failures(teacher_row(0.85, 0.95), teacher) == []


def test_the_gate_refuses_a_variant_more_than_one_percent_worse():
    teacher = teacher_row()
    (worse_ndcg,) = gate_failures(teacher_row(0.7910, 0.90), teacher)
    assert worse_ndcg == "NDCG@10 0.7910 < 0.99 x the teacher's 0.8000"
    (worse_recall,) = gate_failures(teacher_row(0.80, 0.8900), teacher)
    assert worse_recall == "recall@100 0.8900 < 0.99 x the teacher's 0.9000"
    assert len(gate_failures(teacher_row(0.5, 0.5), teacher)) == 2


def test_the_gate_refuses_what_it_cannot_measure():
    unmeasured = {"ndcg_at_10": None, "recall_at_100": None}
    assert gate_failures(unmeasured, unmeasured) == [
        "not measured: the dataset has no graded queries"
    ]


def test_the_default_is_the_fastest_variant_that_passes():
    def row(rate_8, rate_16, passes):
        return {"sequences_per_s": {"8": rate_8, "16": rate_16}, "passes": passes}

    variants = {
        names.TEXT_ENCODER: row(800, 400, True),
        names.QUERY_ENCODER_STATIC: row(200_000, 150_000, False),
        names.QUERY_ENCODER_SHALLOW: row(3000, 1600, True),
    }
    assert choose(variants) == names.QUERY_ENCODER_SHALLOW
    variants[names.QUERY_ENCODER_SHALLOW]["passes"] = False
    assert choose(variants) == names.TEXT_ENCODER


def test_held_out_queries_are_graded(dataset):
    held_out = encoder_variants.held_out_queries(dataset, n=50)
    assert len(held_out) == 50 and set(held_out) <= set(dataset.relevance["query"])
    assert held_out == encoder_variants.held_out_queries(dataset, n=50)
    catalog_only = load_dataset("synthetic", seed=5, n_items=400, n_users=60)
    object.__setattr__(catalog_only, "relevance", None)
    assert encoder_variants.held_out_queries(catalog_only) == []


def test_grades_are_keyed_by_item_index(dataset):
    queries = encoder_variants.held_out_queries(dataset, n=20)
    grades = grades_by_index(dataset, queries)
    item_ids = np.sort(dataset.catalog.item_id.to_numpy())
    graded = dataset.relevance[dataset.relevance["query"] == queries[0]]
    assert {int(item_ids[index]): grade for index, grade in grades[0].items()} == dict(
        zip(graded.item_id, graded.grade)
    )


def test_search_quality_scores_the_fused_and_dense_lists(tmp_path, monkeypatch):
    queries = ["a", "b"]
    grades = [{0: 3, 1: 1}, {2: 3}]
    fused = np.array([[0, 1, -1], [2, -1, -1]])
    dense = np.array([[1, 0, 2], [0, 1, 2]])
    served = np.array([[1, 0, -1], [2, -1, -1]])
    monkeypatch.setattr(
        encoder_variants.text_encoder, "embed", lambda *args, **kwargs: np.zeros((2, 4))
    )
    path = tmp_path / "model.onnx"

    def search(searched, embedded):
        assert searched == queries and embedded.shape == (2, 4)
        return served, fused, dense

    figures, dense_out = search_quality(path, queries, grades, search)
    assert figures["fused_ndcg_at_10"] == 1.0 and figures["recall_at_100"] == 1.0
    assert figures["ndcg_at_10"] == round((ndcg([1, 0], grades[0]) + 1.0) / 2, 4) < 1.0
    assert figures["dense_ndcg_at_10"] == round(
        (ndcg([1, 0, 2], grades[0]) + ndcg([0, 1, 2], grades[1])) / 2, 4
    )
    assert dense_out is dense


def test_the_table_says_when_the_teacher_serves_because_no_student_passed():
    row = {
        "sequences_per_s": {"8": 100.0},
        "ndcg_at_10": None,
        "recall_at_100": None,
        "fused_ndcg_at_10": None,
        "dense_ndcg_at_10": None,
        "overlap": None,
    }
    record = {
        "gate": {"queries": 0, "items": 10, "top_k": 100, "relative_tolerance": 0.01},
        "speed": {
            "batch": 32,
            "threads": 2,
            "machine": {"cpu_model": "cpu", "vector_extensions": [], "cores": 2},
        },
        "variants": {
            names.TEXT_ENCODER: {**row, "passes": True, "failures": []},
            names.QUERY_ENCODER_STATIC: {
                **row,
                "passes": False,
                "failures": ["not measured: the dataset has no graded queries"],
            },
        },
        "chosen": names.TEXT_ENCODER,
    }
    lines = encoder_variants.table(record)
    assert "fails: not measured: the dataset has no graded queries" in lines[2]
    assert lines[-1] == (
        "  serving by default: text_encoder (the teacher: no query student passed the gate)"
    )
