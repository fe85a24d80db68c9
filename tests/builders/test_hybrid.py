"""Hybrid retrieval's pure parts: the BM25 stage and the fusion of dense and BM25 lists."""

import numpy as np
import pytest

from builders.runtime.fusion import FusionError, FusionSettings, dense_scores_of, fuse
from builders.runtime.lexical import PADDING, SAMPLE_STEP, LexicalIndex, best_items, terms

TITLES = [
    "Kestrel Air 3 Waterproof Leather Hiking Boots, Brown",
    "Northline Black V-Neck T-Shirt, Cotton",
    "Northline Crew Neck T-Shirt, Black",
    "Sonique Pro 2 Wireless Headphones, Black",
    "The Classic Brown Leather Belt",
]


@pytest.fixture(scope="module")
def index():
    return LexicalIndex.build(TITLES)


def test_bm25_ranks_term_matches_and_pads_the_rest(index):
    indexes, scores, _ = index.search(["black cotton t-shirt"], 5)
    assert indexes[0, 0] == 1  # the only title with "cotton"
    assert set(indexes[0, :3]) == {1, 2, 3}  # every title with a query word
    assert (np.diff(scores[0]) <= 0).all() and (scores[0, :3] > scores[0, 3]).all()


def test_stemming_case_and_typos_match_and_stop_words_alone_match_nothing(index):
    assert index.search(["HIKING BOOT"], 1)[0][0, 0] == 0
    assert index.search(["headphnoes"], 1)[0][0, 0] == 3  # shares most trigrams
    assert index.search(["2"], 2)[0][0].tolist() == [3, PADDING]  # one-character words count
    indexes, scores, _ = index.search(["the", "zzzz qqqq"], 3)
    assert (indexes == PADDING).all() and (scores == 0).all()


def test_only_words_of_four_or_more_characters_get_trigrams():
    assert terms(["tee dress"]) == [["tee", "dress", "~#dr", "~dre", "~res", "~ess", "~ss#"]]
    # A three-letter word's one or two shared trigrams are no evidence of a typo.
    assert LexicalIndex.build(["Tea Tree Shampoo"]).search(["tee"], 1)[0][0, 0] == PADDING


def test_the_stage_also_scores_given_items(index):
    indexes, scores, also = index.search(["leather"], 2, np.array([[4, -1, 1]]))
    full = index.scores("leather")
    np.testing.assert_allclose(also[0], [full[4], 0, full[1]])
    with pytest.raises(ValueError, match="items to score"):
        index.search(["leather"], 2, np.array([[len(TITLES)]]))


def test_saved_index_answers_the_same(index, tmp_path):
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    queries = ["brown leather", "wireless headphones black"]
    for expected, actual in zip(index.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(expected, actual)


def test_an_empty_catalog_or_k_is_refused(index):
    with pytest.raises(ValueError, match="at least one item"):
        LexicalIndex.build([])
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(["boots"], 0)


#: One request: dense list 7, 3, 5; lexical list 3, 2 (and padding); each candidate's other score.
ONE_REQUEST = (
    np.array([[7, 3, 5]]),
    np.array([[0.9, 0.8, 0.7]], np.float32),
    np.array([[3, 2, -1]]),
    np.array([[4.0, 2.0, 0.0]], np.float32),
    np.array([[1.0, 4.0, 0.0]], np.float32),  # BM25 of 7, 3, 5
    np.array([[0.8, 0.3, 0.0]], np.float32),  # dense score of 3, 2 (and padding)
)


def every_best(scores: np.ndarray, k: int) -> list[int]:
    """The k best positive scores by sorting all of them: best first, ties by index."""
    return sorted(np.flatnonzero(scores > 0).tolist(), key=lambda i: (-scores[i], i))[:k]


@pytest.mark.parametrize("positive", [1.0, 0.3, 0.002, 0.0])
def test_best_items_of_a_large_catalog_are_those_of_a_full_sort(positive):
    rng = np.random.default_rng(7)
    for size in (50, SAMPLE_STEP * 10 + 1, 200_000):
        # few distinct values: many ties, also at the k-th place
        scores = rng.integers(1, 40, size).astype(np.float32)
        scores[rng.random(size) >= positive] = 0
        for k in (1, 10, 100):
            assert best_items(scores, k).tolist() == every_best(scores, k), (size, k)
    # fewer than k reach the sample's threshold: 7 sampled items, 50 others below them
    scores = np.zeros(100_000, dtype=np.float32)
    scores[: 7 * SAMPLE_STEP : SAMPLE_STEP] = 1.0
    scores[1:51] = 0.5
    assert best_items(scores, 100).tolist() == every_best(scores, 100)
    assert len(every_best(scores, 100)) == 57


def test_convex_fusion_blends_scaled_scores_and_carries_both():
    indexes, fused, dense, lexical = fuse(*ONE_REQUEST, 5)
    # Dense scaled over the candidates (0.3..0.9), BM25 over the best (4), equal weights.
    expected = {3: (5 / 6 + 1) / 2, 7: (1 + 0.25) / 2, 5: (4 / 6 + 0) / 2, 2: (0 + 0.5) / 2}
    np.testing.assert_array_equal(indexes[0], [3, 7, 5, 2, -1])
    np.testing.assert_allclose(fused[0, :4], [expected[i] for i in (3, 7, 5, 2)], rtol=1e-6)
    np.testing.assert_allclose(dense[0], [0.8, 0.9, 0.7, 0.3, 0])
    np.testing.assert_allclose(lexical[0], [1.0, 0.25, 0, 0.5, 0])
    assert indexes.dtype == np.int64 and fused.dtype == np.float32
    only_dense = fuse(*ONE_REQUEST, 5, FusionSettings(dense_weight=1.0))[0]
    np.testing.assert_array_equal(only_dense[0], [7, 3, 5, 2, -1])


def test_convex_fusion_without_lexical_matches_keeps_the_dense_order():
    dense_indexes, dense_scores, _, _, _, _ = ONE_REQUEST
    no_match = (np.full((1, 2), -1), np.zeros((1, 2), np.float32))
    indexes, fused, _, lexical = fuse(
        dense_indexes, dense_scores, *no_match, np.zeros((1, 3)), no_match[1], 3
    )
    np.testing.assert_array_equal(indexes[0], [7, 3, 5])
    np.testing.assert_allclose(fused[0], [0.5, 0.25, 0], atol=1e-6)
    assert not lexical.any()


def test_rank_fusion_sums_reciprocal_ranks_and_carries_both_scores():
    indexes, fused, dense, lexical = fuse(*ONE_REQUEST, 5, FusionSettings(method="rrf"))
    # Item 3 is in both lists; 7 is first in one; 2 (lexical only) ties with 3's dense rank.
    np.testing.assert_array_equal(indexes[0], [3, 7, 2, 5, -1])
    np.testing.assert_allclose(fused[0, :2], [1 / 62 + 1 / 61, 1 / 61])
    np.testing.assert_allclose(dense[0], [0.8, 0.9, 0.3, 0.7, 0])
    np.testing.assert_allclose(lexical[0], [1.0, 0.25, 0.5, 0, 0])  # BM25 over the best, 4


def test_dense_scores_of_given_items():
    items = np.eye(3, dtype=np.float32)
    queries = np.array([[0.5, 1.0, 0.0]], np.float32)
    np.testing.assert_allclose(
        dense_scores_of(items, queries, np.array([[1, -1, 0]])), [[1, 0, 0.5]]
    )
    with pytest.raises(FusionError, match="item indexes"):
        dense_scores_of(items, queries, np.array([[3]]))


#: Two dense and two lexical candidates of one request, each list's other scores 0.
TWO_AND_TWO = (
    np.array([[1, 2]]),
    np.array([[0.5, 0.4]]),
    np.array([[3, 4]]),
    np.array([[2.0, 1.0]]),
    np.zeros((1, 2)),
    np.zeros((1, 2)),
)


def test_fusion_weights_and_truncates():
    args = TWO_AND_TWO
    favour_lexical = FusionSettings(method="rrf", rrf_k=60, lexical_weight=2.0)
    indexes, *_ = fuse(*args, 2, favour_lexical)
    np.testing.assert_array_equal(indexes[0], [3, 4])
    with pytest.raises(ValueError, match="non-negative"):
        FusionSettings(lexical_weight=-1)
    with pytest.raises(ValueError, match="dense_weight"):
        FusionSettings(dense_weight=1.5)
    with pytest.raises(ValueError, match="unknown fusion method 'sum'"):
        FusionSettings(method="sum")


def test_fusion_settings_round_trip(tmp_path):
    settings = FusionSettings(method="rrf", rrf_k=10, lexical_weight=0.5)
    settings.save(tmp_path)
    assert FusionSettings.load(tmp_path) == settings


def test_fusion_settings_saved_before_methods_are_rank_fusion(tmp_path):
    (tmp_path / "fusion.json").write_text('{"rrf_k": 60.0, "lexical_weight": 1.0}')
    assert FusionSettings.load(tmp_path) == FusionSettings(method="rrf")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: (a[0][0], *a[1:]), r"\[batch, candidates\]"),
        (lambda a: (a[0].astype(np.float32), *a[1:]), "integers"),
        (lambda a: (a[0], a[1] * np.nan, *a[2:]), "finite"),
        (lambda a: (*a[:2], a[2][:0], a[3][:0], a[4], a[5][:0]), "rows differ"),
        (lambda a: (*a[:4], a[4][:, :1], a[5]), r"\[batch, candidates\]"),
    ],
)
def test_fusion_refuses_malformed_inputs(change, message):
    with pytest.raises(FusionError, match=message):
        fuse(*change(TWO_AND_TWO), 3)
