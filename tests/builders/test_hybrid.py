"""Hybrid retrieval's pure parts: BM25 and the fusion of dense and BM25 lists, and their
Python-backend model with a fake `triton_python_backend_utils`."""

import json

import bm25s
import numpy as np
import pytest
import Stemmer

from builders.offline import fused_candidates
from builders.runtime.fusion import FusionError, FusionSettings, dense_scores_of, fuse
from builders.runtime.lexical import (
    PADDING,
    SAMPLE_STEP,
    LexicalIndex,
    best_items,
    terms,
    words,
)
from tests.fake_pb_utils import load_model, outputs

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


def test_words_are_bm25s_tokens(small_dataset):
    """The index's words are bm25s's tokens with the index's settings (every word, English stop
    words out, Snowball English stems), item texts and queries alike; bm25s.tokenize itself is
    not called: its set-up costs more than a batch's work."""
    texts = [
        *small_dataset.catalog.title.tolist(),
        *small_dataset.sample_queries(200, seed=3),
        "The 3-ply CAFÉ towels, size 4: l'été!",
        "",
        "the and of",
    ]
    expected = bm25s.tokenize(
        texts,
        token_pattern=r"(?u)\b\w+\b",
        stopwords="en",
        stemmer=Stemmer.Stemmer("english"),
        return_ids=False,
        show_progress=False,
    )
    assert words(texts) == expected


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


# --- whole batches: the same answers as each request alone ----------------------------------


def assert_same_answers(batched: list, alone: list) -> None:
    """Responses (`outputs`) of a batch equal those of each request sent alone."""
    for one, other in zip(batched, alone, strict=True):
        if isinstance(one, tuple):  # an error: (code, message)
            assert one == other
            continue
        assert one.keys() == other.keys()
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])
            assert one[name].dtype == other[name].dtype and one[name].shape == other[name].shape


def test_a_batch_of_queries_scores_as_each_query_alone(index):
    rng = np.random.default_rng(11)
    words = " ".join(TITLES).split() + ["the", "zzzz", "headphnoes"]
    queries = [" ".join(rng.choice(words, rng.integers(0, 5))) for _ in range(12)]
    also = rng.integers(-1, len(TITLES), (len(queries), 6))
    batched = index.search(queries, 3, also)
    for row, query in enumerate(queries):
        for whole, alone in zip(batched, index.search([query], 3, also[row : row + 1])):
            np.testing.assert_array_equal(whole[row : row + 1], alone)


def fuse_row_by_row(*arrays, num_candidates, settings):
    """The fusion one row at a time, as it was before it took whole batches."""
    (
        dense_indexes,
        dense_scores,
        lexical_indexes,
        lexical_scores,
        bm25_of_dense,
        dense_of_lexical,
    ) = arrays
    shape = (len(dense_indexes), num_candidates)
    candidates = np.full(shape, PADDING, dtype=np.int64)
    fused, dense, lexical = (np.zeros(shape, dtype=np.float32) for _ in range(3))
    for row in range(len(dense_indexes)):
        d_valid, l_valid = dense_indexes[row] != PADDING, lexical_indexes[row] != PADDING
        d_items, l_items = dense_indexes[row][d_valid], lexical_indexes[row][l_valid]
        items, slots = np.unique(np.concatenate([d_items, l_items]), return_inverse=True)
        item_dense = np.zeros(len(items))
        item_dense[slots[len(d_items) :]] = dense_of_lexical[row][l_valid]
        item_dense[slots[: len(d_items)]] = dense_scores[row][d_valid]
        item_lexical = np.zeros(len(items))
        item_lexical[slots[: len(d_items)]] = bm25_of_dense[row][d_valid]
        item_lexical[slots[len(d_items) :]] = lexical_scores[row][l_valid]
        best = lexical_scores[row][l_valid].max() if l_valid.any() else 0.0
        if best > 0:
            item_lexical /= best
        if settings.method == "convex":
            low, spread = (item_dense.min(), np.ptp(item_dense)) if len(items) else (0.0, 0.0)
            scaled = (item_dense - low) / spread if spread > 0 else np.zeros_like(item_dense)
            totals = settings.dense_weight * scaled + (1 - settings.dense_weight) * item_lexical
        else:
            d_parts = 1 / (settings.rrf_k + np.flatnonzero(d_valid) + 1.0)
            l_parts = settings.lexical_weight / (settings.rrf_k + np.flatnonzero(l_valid) + 1.0)
            totals = np.bincount(slots, np.concatenate([d_parts, l_parts]), minlength=len(items))
        order = np.lexsort((items, -totals))[:num_candidates]
        candidates[row, : len(order)] = items[order]
        fused[row, : len(order)] = totals[order]
        dense[row, : len(order)] = item_dense[order]
        lexical[row, : len(order)] = item_lexical[order]
    return candidates, fused, dense, lexical


def random_fusion_inputs(rng, rows: int, n_dense: int, n_lexical: int, n_items: int) -> tuple:
    """Both lists with padding, repeated items, tied scores, a row without lexical matches,
    one whose dense scores are all equal and one whose best BM25 is negative."""
    dense_indexes = rng.integers(-1, n_items, (rows, n_dense))
    lexical_indexes = rng.integers(-1, n_items, (rows, n_lexical))
    dense_scores = rng.integers(-4, 5, (rows, n_dense)).astype(np.float32) / 4
    lexical_scores = rng.uniform(0, 5, (rows, n_lexical)).astype(np.float32)
    bm25_of_dense = rng.uniform(0, 5, (rows, n_dense)).astype(np.float32)
    dense_of_lexical = rng.normal(size=(rows, n_lexical)).astype(np.float32)
    lexical_indexes[0] = PADDING
    dense_scores[1] = 0.5
    lexical_scores[2] = -lexical_scores[2]
    return (
        dense_indexes,
        dense_scores,
        lexical_indexes,
        lexical_scores,
        bm25_of_dense,
        dense_of_lexical,
    )


@pytest.mark.parametrize(
    "settings",
    [FusionSettings(), FusionSettings(dense_weight=0.3), FusionSettings(method="rrf", rrf_k=10)],
)
@pytest.mark.parametrize(
    ("n_dense", "n_lexical", "n_items", "num_candidates"),
    [
        (12, 8, 15, 10),
        (30, 30, 1000, 20),
        (3, 4, 6, 12),
        (0, 5, 9, 4),
    ],
)
def test_fusing_a_batch_equals_fusing_row_by_row(
    settings, n_dense, n_lexical, n_items, num_candidates
):
    rng = np.random.default_rng(n_dense + n_lexical)
    arrays = random_fusion_inputs(rng, 9, n_dense, n_lexical, n_items)
    expected = fuse_row_by_row(*arrays, num_candidates=num_candidates, settings=settings)
    for actual, wanted in zip(fuse(*arrays, num_candidates, settings), expected, strict=True):
        np.testing.assert_array_equal(actual, wanted)
        assert actual.dtype == wanted.dtype
    for row in range(9):
        alone = fuse(*(a[row : row + 1] for a in arrays), num_candidates, settings)
        for actual, wanted in zip(alone, expected):
            np.testing.assert_array_equal(actual, wanted[row : row + 1])


def model_args(num_candidates: int) -> dict:
    """What Triton passes `initialize`: the config's outputs are all the models read."""
    output = {"name": "candidate_indexes", "data_type": "TYPE_INT64", "dims": [num_candidates]}
    return {"model_config": json.dumps({"output": [output]})}


def test_served_hybrid_batch_equals_each_request_alone_and_the_offline_answer(
    index, tmp_path, monkeypatch
):
    model = load_model(
        tmp_path,
        "hybrid_model",
        "lexical",
        "synonyms",
        "fusion",
        "tokenization",
        monkeypatch=monkeypatch,
    )
    rng = np.random.default_rng(4)
    n_items, dim = len(TITLES), 8
    item_embeddings = rng.normal(size=(n_items, dim)).astype(np.float32)
    np.save(tmp_path / "item_embeddings.npy", item_embeddings)
    index.save(tmp_path)
    FusionSettings().save(tmp_path)
    stage = model.TritonPythonModel()
    stage.initialize(model_args(num_candidates=4))
    queries = [b"black cotton t-shirt", b"the", b"headphnoes", b"brown \xff leather", b"boots"]
    embeddings = rng.normal(size=(len(queries), dim)).astype(np.float32)
    requests = [
        {
            "query": np.array([[q]], dtype=object),
            "dense_indexes": np.array([[4, -1, i % n_items]]),
            "dense_scores": np.array([[0.9, 0.0, 0.5]], dtype=np.float32),
            "query_embedding": embeddings[i : i + 1],
        }
        for i, q in enumerate(queries)
    ]
    requests[2]["dense_indexes"] = np.full((1, 3), n_items)
    requests[4]["dense_scores"] = requests[4]["dense_scores"] * np.nan
    batched = [outputs(r) for r in stage.execute(requests)]
    assert batched[2] == ("INVALID_ARG", f"items to score must be in 0..{n_items - 1} (or -1)")
    assert batched[4] == ("INVALID_ARG", "dense scores must be finite")
    assert_same_answers(batched, [outputs(stage.execute([r])[0]) for r in requests])
    assert batched[0]["candidate_indexes"].shape == (1, 4)
    assert 1 in batched[0]["candidate_indexes"][0]  # the only title with "cotton"
    # A query no item matches lexically: the dense candidates alone, in dense order.
    assert batched[1]["candidate_indexes"][0].tolist() == [4, 1, -1, -1]
    assert batched[1]["candidate_lexical_scores"].max() == 0
    offline = fused_candidates(
        ["black cotton t-shirt"],
        embeddings[:1],
        (requests[0]["dense_indexes"], requests[0]["dense_scores"]),
        index,
        item_embeddings,
        4,
        FusionSettings(),
    )
    for name, expected in zip(stage.outputs, offline, strict=True):
        np.testing.assert_array_equal(batched[0][name], expected)
