"""The encoder variants' gate: retrieval overlap, NDCG, the verdict and the default choice."""

import numpy as np
import pytest

from builders import encoder_variants, names
from builders.data import load_dataset
from builders.encoder_variants import (
    MIN_OVERLAP,
    NDCG_TOLERANCE,
    choose,
    comparison_depth,
    gate_failures,
    ndcg_at_10,
    overlap,
    top_k,
)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic", seed=5, n_items=400, n_users=60)


def test_top_k_and_overlap():
    items = np.eye(4, dtype=np.float32)
    queries = np.array([[0.9, 0.5, 0.1, 0.0], [0.0, 0.1, 0.2, 0.9]], dtype=np.float32)
    assert top_k(queries, items, 2).tolist() == [[0, 1], [3, 2]]
    assert overlap(np.array([[0, 1], [3, 2]]), np.array([[1, 0], [3, 1]])) == 0.75


def test_a_sample_compares_a_proportional_depth():
    assert comparison_depth(2000, 10000) == 20
    assert comparison_depth(1500, 1500) == 100
    assert comparison_depth(50, 50) == 50
    assert comparison_depth(10, 1_000_000) == 1


def test_ndcg_at_10():
    assert ndcg_at_10([3, 1, 2], {3: 3, 1: 2}) == pytest.approx(1.0)
    assert ndcg_at_10([1, 3], {3: 3, 1: 2}) < 1.0
    assert ndcg_at_10([5, 6], {}) == 0.0


def test_the_gate():
    assert gate_failures(MIN_OVERLAP, 0.80, 0.80 + NDCG_TOLERANCE) == []
    assert gate_failures(0.98, None, None) == ["top-k overlap 0.9800 < 0.99"]
    (ndcg,) = gate_failures(1.0, 0.79, 0.80)
    assert ndcg.startswith("NDCG@10 0.7900 < fp32's 0.8000")
    assert gate_failures(None, None, None) == ["not measured: the dataset has no logged queries"]


def test_the_default_is_the_fastest_variant_that_passes():
    def row(rate_8, rate_16, passes):
        return {"sequences_per_s": {"8": rate_8, "16": rate_16}, "passes": passes}

    variants = {
        names.TEXT_ENCODER: row(800, 400, True),
        names.TEXT_ENCODER_INT8: row(2000, 1000, False),
        names.TEXT_ENCODER_INT8_STATIC: row(1000, 600, True),
    }
    assert choose(variants) == names.TEXT_ENCODER_INT8_STATIC
    variants[names.TEXT_ENCODER_INT8_STATIC]["passes"] = False
    assert choose(variants) == names.TEXT_ENCODER


def test_held_out_queries_are_graded_and_never_calibrate(dataset):
    held_out = encoder_variants.held_out_queries(dataset, n=50)
    assert len(held_out) == 50 and set(held_out) <= set(dataset.relevance["query"])
    texts = encoder_variants.calibration_texts(dataset, held_out, n=100)
    assert not set(texts) & set(held_out)
    assert len(texts) == 200


def test_quality_set_maps_grades_into_the_sample(dataset):
    queries = encoder_variants.held_out_queries(dataset, n=20)
    qset = encoder_variants.quality_set(dataset, queries, sample=100)
    assert len(qset.items) == 100 and qset.catalog_items == 400 and qset.k == 25
    assert len(qset.grades) == 20
    assert all(
        0 <= row < 100 and grade in (1, 2, 3) for g in qset.grades for row, grade in g.items()
    )
    whole = encoder_variants.quality_set(dataset, queries)
    graded = dataset.relevance[dataset.relevance["query"] == queries[0]]
    assert len(whole.grades[0]) == len(graded) and whole.k == 100
