"""LightGBM rankers: training, the ONNX graph against LightGBM, the model-file contract."""

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

    ctx = BuildContext(BuildOptions(repo=tmp_path, ranker="auto"), small_dataset, version=1)
    groups = (ranker.build_tables(small_dataset), examples(300, 0), examples(100, 1))
    trained = train_ranker(ctx, "search", groups, uses=SEARCH_RANKER_FEATURES)
    held_out = trained.metrics["held_out"]
    assert set(held_out) == set(gbdt.KINDS)
    assert trained.chosen == gbdt.choose("search", held_out["dcn"], held_out["lambdamart"])
    assert trained.metrics["ranker"] == trained.chosen
    assert trained.metrics["auc"] == held_out[trained.chosen]["auc"]
    assert trained.dcn is not None and trained.lambdamart is not None
