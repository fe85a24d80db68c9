"""LightGBM rankers: training, the ONNX graph against LightGBM, the model-file contract."""

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest

from builders import gbdt, names, profiles
from builders.build import BuildOptions
from builders.ranker import ALL_FEATURES, SEARCH_RANKER_FEATURES, Examples, ParityError
from builders.specs import parse_pbtxt

VOCABULARY = (40, 60, 6, 5, 11)


def examples(groups: int, seed: int, candidates: int = 8) -> Examples:
    """Groups whose engaged candidates have the higher retrieval and lexical scores; the last
    two candidates of every third group are padding (weight 0)."""
    rng = np.random.default_rng(seed)
    sparse = np.stack(
        [rng.integers(0, size, (groups, candidates)) for size in VOCABULARY], axis=-1
    ).astype(np.int64)
    dense = rng.normal(size=(groups, candidates, 5)).astype(np.float32)
    signal = dense[..., 0] + 0.5 * dense[..., 1] + 0.3 * rng.normal(size=(groups, candidates))
    labels = (signal > 0.8).astype(np.float32)
    weights = np.ones_like(labels)
    weights[::3, -2:] = 0.0
    return Examples(sparse, dense, labels, weights)


@pytest.fixture(scope="module")
def trained():
    train, test = examples(600, 0), examples(200, 1)
    return {
        "search": gbdt.train("search", train, test, SEARCH_RANKER_FEATURES),
        "recommend": gbdt.train("recommend", train, test, ALL_FEATURES),
        "test": test,
    }


def test_both_objectives_learn_the_signal(trained):
    search, recommend = trained["search"], trained["recommend"]
    assert search.objective == "lambdarank" and recommend.objective == "binary"
    assert search.booster.feature_name() == list(SEARCH_RANKER_FEATURES)
    assert search.metrics["group_ndcg_at_10"] > 0.9
    assert recommend.metrics["auc"] > 0.9
    probabilities = gbdt.predict(recommend, trained["test"])
    assert probabilities.shape == trained["test"].labels.shape
    assert probabilities.min() >= 0 and probabilities.max() <= 1


@pytest.mark.parametrize("kind", ["search", "recommend"])
def test_onnx_ranker_matches_lightgbm_on_any_grid(trained, kind, tmp_path):
    result = trained[kind]
    parity = gbdt.export_onnx(result.booster, result.uses, tmp_path, [trained["test"]], VOCABULARY)
    assert parity["max_abs_diff"] <= gbdt.ONNX_ATOL
    assert parity["features"] == list(result.uses)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, candidates in ((1, 1), (3, 50)):
        grid = examples(batch, 5, candidates)
        (score,) = session.run(["score"], {"sparse": grid.sparse, "dense": grid.dense})
        assert score.shape == (batch, candidates) and score.dtype == np.float32
        np.testing.assert_allclose(score, gbdt.predict(result, grid), atol=gbdt.ONNX_ATOL)
    reloaded = gbdt.load_booster(tmp_path / gbdt.MODEL_FILE)
    assert gbdt.objective_of(reloaded) == result.objective


def test_a_threshold_between_two_adjacent_float32_values_keeps_its_side_in_onnx():
    """LightGBM splits two adjacent float32 values at their midpoint; rounded to the nearest
    float32 that threshold is the upper value itself, which would then go left in ONNX."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    lower = np.float32(0.7)
    if lower.view(np.int32) % 2 == 0:  # an odd lower value: the midpoint rounds up (to even)
        lower = np.nextafter(lower, np.float32(1))
    upper = np.nextafter(lower, np.float32(1))
    features = np.repeat(np.array([[lower], [upper]], np.float32), 100, axis=0)
    labels = (features[:, 0] == upper).astype(np.int32)
    settings = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 5, "num_threads": 1}
    booster = lgb.train(settings, lgb.Dataset(features, labels), 5)

    def onnx_scores(model: lgb.Booster) -> np.ndarray:
        graph = convert_lightgbm(
            model, initial_types=[("x", FloatTensorType([None, 1]))], zipmap=False, target_opset=15
        )
        session = ort.InferenceSession(
            graph.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {"x": features})[1][:, 1]

    expected = booster.predict(features)
    assert np.abs(onnx_scores(booster) - expected).max() > 0.1  # converted as it is
    rounded = gbdt.float32_thresholds(booster)
    np.testing.assert_array_equal(rounded.predict(features), expected)
    np.testing.assert_allclose(onnx_scores(rounded), expected, atol=gbdt.ONNX_ATOL)


def test_a_model_for_other_features_is_refused_before_anything_is_written(trained, tmp_path):
    search = trained["search"].booster
    with pytest.raises(gbdt.ModelFileError, match="has 2 features, ranker computes 10; missing"):
        gbdt.export_onnx(search, ALL_FEATURES, tmp_path, [], VOCABULARY)
    with pytest.raises(
        gbdt.ModelFileError, match="missing: price_gap; not computed here: lexical_score"
    ):
        gbdt.check_features(search, ("retrieval_score", "price_gap"), "search_ranker")
    with pytest.raises(gbdt.ModelFileError, match="computes 1; not computed here: lexical_score"):
        gbdt.check_features(search, ("retrieval_score",), "search_ranker")
    with pytest.raises(gbdt.ModelFileError, match="another order: retrieval_score, lexical"):
        gbdt.check_features(search, ("lexical_score", "retrieval_score"), "search_ranker")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(gbdt.ModelFileError, match="no such LightGBM model file"):
        gbdt.load_booster(tmp_path / "absent.txt")
    broken = tmp_path / "model.txt"
    broken.write_text("tree\nnot a model\n")
    with pytest.raises(gbdt.ModelFileError, match="model.txt: not a LightGBM text model"):
        gbdt.load_booster(broken)


def test_parity_beyond_the_tolerance_is_refused(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(gbdt, "ONNX_ATOL", 0.0)
    monkeypatch.setattr(gbdt, "rows", lambda examples, uses: np.zeros((examples.labels.size, 2)))
    with pytest.raises(ParityError, match="ONNX ranker vs LightGBM"):
        gbdt.export_onnx(
            trained["search"].booster, SEARCH_RANKER_FEATURES, tmp_path, [], VOCABULARY
        )
    assert list(tmp_path.iterdir()) == []


def test_auto_picks_the_better_held_out_figure():
    assert gbdt.choose("search", {"group_ndcg_at_10": 0.7}, {"group_ndcg_at_10": 0.8}) == (
        "lambdamart"
    )
    assert gbdt.choose("search", {"group_ndcg_at_10": 0.8}, {"group_ndcg_at_10": 0.8}) == "dcn"
    assert gbdt.choose("recommend", {"auc": 0.9}, {"auc": 0.8}) == "dcn"
    assert gbdt.choose("recommend", {"auc": float("nan")}, {"auc": 0.8}) == "dcn"
    # Search goes by the graded queries where both have that figure, not the sessions.
    dcn = {"group_ndcg_at_10": 0.7, "graded_ndcg_at_10": 0.93}
    trees = {"group_ndcg_at_10": 0.8, "graded_ndcg_at_10": 0.90}
    assert gbdt.choose("search", dcn, trees) == "dcn"
    assert gbdt.choose("search", dcn, {"group_ndcg_at_10": 0.8}) == "lambdamart"
    with pytest.raises(ValueError, match="ranker must be one of auto, dcn, lambdamart"):
        BuildOptions(repo="unused", ranker="xgboost")


def test_tree_rankers_stay_on_onnx_runtime_on_the_cpu_in_every_profile():
    for name in (names.SEARCH_RANKER, names.RECOMMEND_RANKER):
        spec = names.ranker_spec(name, "onnxruntime")
        gpu = profiles.adapt(spec, "gpu", trees=True)
        config = parse_pbtxt(gpu.to_pbtxt())  # through Triton's ModelConfig proto
        assert config["platform"] == "onnxruntime_onnx"
        assert config["instance_group"][0]["kind"] == "KIND_CPU"
        assert "optimization" not in config
    dcn = profiles.adapt(names.ranker_spec(names.SEARCH_RANKER, "onnxruntime"), "gpu")
    assert dcn.backend == "tensorrt"


def test_auto_trains_both_on_the_same_groups_and_records_them(small_dataset, tmp_path):
    from builders import ranker
    from builders.build import BuildContext, train_ranker

    ctx = BuildContext(BuildOptions(repo=tmp_path), small_dataset, version=1)  # auto
    groups = (ranker.build_tables(small_dataset), examples(300, 0), examples(100, 1))
    trained = train_ranker(ctx, "recommend", groups, uses=ALL_FEATURES)
    held_out = trained.metrics["held_out"]
    assert set(held_out) == {"dcn", "lambdamart"}
    assert trained.chosen == gbdt.choose("recommend", held_out["dcn"], held_out["lambdamart"])
    assert trained.metrics["ranker"] == trained.chosen
    assert trained.metrics["auc"] == held_out[trained.chosen]["auc"]
    assert trained.dcn is not None and trained.lambdamart is not None


def test_auto_judges_search_rankers_on_the_graded_queries(small_repository, small_dataset):
    """`graded_search_ndcg` serves the held-out graded queries through the repository's
    stages and orders the fused candidates by the scores it is given."""
    from builders.build import BuildContext, graded_search_ndcg
    from builders.data import with_user_indexes
    from builders.runtime.features import DENSE_FEATURES

    dataset = with_user_indexes(small_dataset)[0]
    ctx = BuildContext(BuildOptions(repo=small_repository, num_candidates=50), dataset, version=2)
    retrieval = DENSE_FEATURES.index("retrieval_score")

    def by_retrieval(sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
        return dense[..., retrieval]

    best = graded_search_ndcg(ctx, by_retrieval)
    worst = graded_search_ndcg(ctx, lambda sparse, dense: -by_retrieval(sparse, dense))
    assert 0 <= worst < best <= 1
    assert worst < 0.5 * best


def test_auto_trains_only_the_dcn_with_dp(tmp_path):
    assert BuildOptions(repo=tmp_path).ranker_kinds == ("dcn", "lambdamart")
    assert BuildOptions(repo=tmp_path, dp_epsilon=1.0).ranker_kinds == ("dcn",)
    assert BuildOptions(repo=tmp_path, ranker="lambdamart").ranker_kinds == ("lambdamart",)
