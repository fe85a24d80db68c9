"""Pure logic of the pipelines: release records, their ensembles and the top-k step."""

import json

import numpy as np
import pytest

from builders import names
from builders.pipelines import (
    PipelineSpec,
    Stage,
    apart,
    ensemble,
    lineage,
    parse_release_model,
    query_encoder,
    release_model,
)
from builders.runtime.topk import RequestError, parse_k, results, top_k
from builders.specs import parse_pbtxt
from tests.fake_pb_utils import load_model, outputs

SEARCH_STAGES = {
    "tokenizer": Stage(names.QUERY_TOKENIZER, 1),
    "encoder": Stage(names.TEXT_ENCODER, 1),
    "index": Stage(names.SEARCH_INDEX, 1),
    "hybrid": Stage(names.HYBRID_RETRIEVAL, 1),
    "features": Stage(names.RANKING_FEATURES, 1),
    "ranker": Stage(names.SEARCH_RANKER, 2),
    "top_k": Stage(names.TOP_K, 1),
}

#: A search release's steps with its exact index composed (`retrieval`) and the rest apart.
RETRIEVAL_APART_STEPS = [
    names.QUERY_TOKENIZER,
    names.SEARCH_RETRIEVAL,
    names.HYBRID_RETRIEVAL,
    names.RANKING_FEATURES,
    names.SEARCH_RANKER,
    names.TOP_K,
]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "'k' is required"),
        (np.array([[0]], np.int32), "at least 1, got 0"),
        (np.array([[-3]], np.int32), "at least 1, got -3"),
        (np.array([[1, 2]], np.int32), "must hold one value"),
    ],
)
def test_bad_k(value, message):
    with pytest.raises(RequestError, match=message):
        parse_k(value)


def test_large_k_is_kept_for_the_truncation_signal():
    assert parse_k(np.array([[10**6]], np.int64)) == 10**6


def test_top_k_orders_by_score_and_drops_padding():
    indexes, scores = top_k(
        np.array([5, 9, -1, 2, 7]), np.array([0.1, 0.9, 0.99, 0.5, 0.9], np.float32), 3
    )
    np.testing.assert_array_equal(indexes, [9, 7, 2])
    assert scores.dtype == np.float32
    assert len(top_k(np.array([1, -1]), np.array([0.3, 0.4]), 10)[0]) == 1


def test_results_map_indexes_to_item_ids_and_flag_truncation():
    item_ids = np.array([100, 101, 102, 103])
    (ids, scores, truncated), (*_, short) = results(
        item_ids,
        [
            (np.array([[3, 0, -1]]), np.array([[0.2, 0.5, 0]]), np.array([[2]])),
            (np.array([[3, 0, -1]]), np.array([[0.2, 0.5, 0]]), np.array([[3]])),
        ],
    )
    np.testing.assert_array_equal(ids, [100, 103])
    np.testing.assert_allclose(scores, [0.5, 0.2])
    assert not truncated and short


def test_results_refuse_mismatched_or_foreign_candidates_and_bad_k():
    k = np.array([[1]])
    answers = results(
        np.arange(4),
        [
            (np.array([1, 2, 3]), np.array([0.1, 0.2]), k),
            (np.array([9]), np.array([0.1]), k),
            (np.array([2]), np.array([0.1]), np.array([[0]])),
            (np.array([2]), np.array([0.1]), k),
        ],
    )
    assert [str(a) for a in answers[:3]] == [
        "3 candidates but 2 scores; they must match",
        "item index 9 is outside 0..3",
        "'k' must be at least 1, got 0",
    ]
    assert all(isinstance(a, RequestError) for a in answers[:3])
    assert answers[3][0].tolist() == [2]


def random_top_k_requests(rng, n_requests: int, n_candidates: int, n_items: int) -> list:
    """Requests with padding, tied scores and k from 1 to beyond the candidates."""
    requests = []
    for _ in range(n_requests):
        indexes = rng.integers(-1, n_items, (1, n_candidates))
        scores = rng.integers(0, 5, (1, n_candidates)).astype(np.float32) / 4
        requests.append((indexes, scores, rng.integers(1, n_candidates + 5, (1, 1), np.int32)))
    return requests


def test_batched_results_equal_top_k_of_each_request():
    rng = np.random.default_rng(3)
    item_ids = np.arange(50) * 10 + 7
    requests = random_top_k_requests(rng, 16, 30, len(item_ids))
    for (indexes, scores, k), answer in zip(requests, results(item_ids, requests)):
        expected, best = top_k(indexes, scores, int(k[0, 0]))
        np.testing.assert_array_equal(answer[0], item_ids[expected])
        np.testing.assert_array_equal(answer[1], best)
        assert answer[0].dtype == np.int64 and answer[1].dtype == np.float32
        assert answer[2] == (len(expected) < k[0, 0])


def test_served_top_k_batch_equals_each_request_alone(tmp_path, monkeypatch):
    model = load_model(tmp_path, "topk_model", "topk", monkeypatch=monkeypatch)
    item_ids = np.arange(40, dtype=np.int64) + 1000
    np.save(tmp_path / "item_ids.npy", item_ids)
    stage = model.TritonPythonModel()
    stage.initialize({})
    names_ = ("candidate_indexes", "candidate_scores", "k")
    rng = np.random.default_rng(5)
    requests = [dict(zip(names_, r)) for r in random_top_k_requests(rng, 8, 20, len(item_ids))]
    requests[3]["k"] = np.array([[0]], np.int32)
    requests[5]["candidate_indexes"] = requests[5]["candidate_indexes"] + 100  # foreign items
    batched = [outputs(r) for r in stage.execute(requests)]
    alone = [outputs(stage.execute([r])[0]) for r in requests]
    assert batched[3] == ("INVALID_ARG", "'k' must be at least 1, got 0")
    assert batched[5][0] == "INVALID_ARG" and "is outside 0..39" in batched[5][1]
    for one, other in zip(batched, alone):
        if isinstance(one, tuple):
            assert one == other
            continue
        assert one.keys() == other.keys() == {"item_ids", "scores", "truncated"}
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])
            assert one[name].dtype == other[name].dtype and one[name].ndim == 2


def test_spec_json_round_trip(tmp_path):
    spec = PipelineSpec("search", 100, {"encoder": Stage("text_encoder", 2)})
    (tmp_path / "pipeline.json").write_text(spec.to_json())
    assert PipelineSpec.load(tmp_path / "pipeline.json") == spec


def test_a_release_of_the_retired_stage_layout_asks_for_a_rebuild(tmp_path):
    stages = {"lexical": Stage("lexical_index", 1), "fusion": Stage("hybrid_fusion", 1)}
    (tmp_path / "pipeline.json").write_text(PipelineSpec("search", 100, stages).to_json())
    with pytest.raises(ValueError, match="fusion, lexical .*hybrid_retrieval.*rebuild"):
        PipelineSpec.load(tmp_path / "pipeline.json")


def test_release_model_names_round_trip():
    assert release_model("search", 2) == "search_v2"
    assert parse_release_model("recommend_v12") == ("recommend", 12)
    for other in ("search", "search_v0", "search_ranker", "search_v2x", "foo_v1"):
        assert parse_release_model(other) is None
    with pytest.raises(ValueError, match="releases start at 1"):
        release_model("search", 0)


def test_search_ensemble_pins_every_stage_and_serves_its_release():
    config = parse_pbtxt(ensemble(PipelineSpec("search", 50, SEARCH_STAGES), 3).to_pbtxt())
    assert config["name"] == "search_v3" and config["platform"] == "ensemble"
    assert config["version_policy"] == {"specific": {"versions": ["3"]}}
    steps = config["ensemble_scheduling"]["step"]
    assert [(s["model_name"], s["model_version"]) for s in steps] == [
        (names.QUERY_TOKENIZER, "1"),
        (names.TEXT_ENCODER, "1"),
        (names.SEARCH_INDEX, "1"),
        (names.HYBRID_RETRIEVAL, "1"),
        (names.RANKING_FEATURES, "1"),
        (names.SEARCH_RANKER, "2"),
        (names.TOP_K, "1"),
    ]
    assert steps[-1]["input_map"]["candidate_scores"] == "ranker_scores"
    features = steps[4]["input_map"]
    assert features["candidate_scores"] == "retrieval_scores"
    assert features["lexical_scores"] == "lexical_scores"
    assert steps[3]["input_map"] == {
        "query": "query",
        "dense_indexes": "dense_indexes",
        "dense_scores": "dense_scores",
        "query_embedding": "query_embedding",  # it scores the lexical-only items
    }
    assert [t["name"] for t in config["input"]] == ["query", "user_id", "k"]


def test_without_a_ranker_search_orders_by_fused_score_and_takes_no_user():
    stages = {r: s for r, s in SEARCH_STAGES.items() if r not in ("features", "ranker")}
    spec = ensemble(PipelineSpec("search", 50, stages), 1, name="search")
    assert spec.name == "search"
    assert spec.steps[-1].input_map["candidate_scores"] == "fused_scores"
    # The hybrid step maps only what top-k reads.
    assert set(spec.steps[-2].output_map) == {"candidate_indexes", "candidate_scores"}
    with_ranker = ensemble(PipelineSpec("search", 50, SEARCH_STAGES), 1).steps[3].output_map
    assert "candidate_scores" not in with_ranker  # the ranker orders: no unused tensor
    assert [t.name for t in spec.inputs] == ["query", "k"]


def test_a_release_without_a_hybrid_stage_is_dense_only():
    stages = {r: s for r, s in SEARCH_STAGES.items() if r != "hybrid"}
    steps = ensemble(PipelineSpec("search", 50, stages), 1).steps
    assert [step.model for step in steps][2:4] == [names.SEARCH_INDEX, names.RANKING_FEATURES]
    assert "lexical_scores" not in steps[3].input_map


def test_recommend_ensemble_starts_at_the_user_tower():
    stages = {
        "user_tower": Stage(names.USER_TOWER, 4),
        "index": Stage(names.RECOMMEND_INDEX, 4),
        "features": Stage(names.RANKING_FEATURES, 1),
        "ranker": Stage(names.RECOMMEND_RANKER, 1),
        "top_k": Stage(names.TOP_K, 1),
    }
    spec = ensemble(PipelineSpec("recommend", 100, stages), 4)
    assert spec.steps[0].input_map == {"user_id": "user_id"}
    assert [t.name for t in spec.inputs] == ["user_id", "k"]


def test_a_release_with_composed_retrieval_runs_it_in_place_of_encoder_and_index():
    stages = {r: s for r, s in SEARCH_STAGES.items() if r not in ("encoder", "index")}
    stages["retrieval"] = Stage(names.SEARCH_RETRIEVAL, 3)
    steps = ensemble(PipelineSpec("search", 50, stages), 3).steps
    assert [step.model for step in steps] == RETRIEVAL_APART_STEPS
    assert steps[1].input_map == {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    assert steps[1].output_map == {
        "embedding": "query_embedding",
        "candidate_indexes": "dense_indexes",
        "candidate_scores": "dense_scores",
    }
    # Dense only, nothing reads the embedding, so the step does not map it.
    dense_only = {r: s for r, s in stages.items() if r != "hybrid"}
    assert (
        "embedding" not in ensemble(PipelineSpec("search", 50, dense_only), 3).steps[1].output_map
    )


def test_recommend_with_composed_retrieval_starts_at_it():
    stages = {
        "retrieval": Stage(names.RECOMMEND_RETRIEVAL, 4),
        "features": Stage(names.RANKING_FEATURES, 1),
        "ranker": Stage(names.RECOMMEND_RANKER, 1),
        "top_k": Stage(names.TOP_K, 1),
    }
    first = ensemble(PipelineSpec("recommend", 100, stages), 4).steps[0]
    assert first.model == names.RECOMMEND_RETRIEVAL and first.input_map == {"user_id": "user_id"}
    assert first.output_map == {
        "candidate_indexes": "candidate_indexes",
        "candidate_scores": "retrieval_scores",
    }


def test_the_lineage_of_a_release_names_the_parts_of_its_retrieval(tmp_path):
    folder = tmp_path / names.SEARCH_RETRIEVAL / "3"
    folder.mkdir(parents=True)
    parts = {names.QUERY_ENCODER_SHALLOW: 2, names.SEARCH_INDEX: 1}
    (folder / "manifest.json").write_text(json.dumps({"depends_on": parts}))
    stages = {r: s for r, s in SEARCH_STAGES.items() if r not in ("encoder", "index")}
    spec = PipelineSpec("search", 50, {**stages, "retrieval": Stage(names.SEARCH_RETRIEVAL, 3)})
    found = lineage(tmp_path, spec)
    assert found["encoder"] == Stage(names.QUERY_ENCODER_SHALLOW, 2)
    assert found["index"] == Stage(names.SEARCH_INDEX, 1)
    assert found["retrieval"] == Stage(names.SEARCH_RETRIEVAL, 3)
    assert query_encoder(tmp_path, spec) == Stage(names.QUERY_ENCODER_SHALLOW, 2)
    two_step = PipelineSpec("search", 50, SEARCH_STAGES)  # an ANN release: no retrieval
    assert query_encoder(tmp_path, two_step) == SEARCH_STAGES["encoder"]


def test_a_release_with_a_composed_query_stage_runs_it_in_place_of_three():
    stages = {r: SEARCH_STAGES[r] for r in ("features", "ranker", "top_k")}
    stages["query"] = Stage(names.SEARCH_QUERY, 3)
    steps = ensemble(PipelineSpec("search", 50, stages), 3).steps
    assert [step.model for step in steps] == [
        names.SEARCH_QUERY,
        names.RANKING_FEATURES,
        names.SEARCH_RANKER,
        names.TOP_K,
    ]
    assert steps[0].input_map == {"query": "query"}
    # What the hybrid stage hands the features: the candidates and both scores.
    assert steps[0].output_map == {
        "candidate_indexes": "candidate_indexes",
        "candidate_dense_scores": "retrieval_scores",
        "candidate_lexical_scores": "lexical_scores",
    }
    assert steps[1].input_map["lexical_scores"] == "lexical_scores"
    assert steps[3].input_map["candidate_scores"] == "ranker_scores"
    # Without a ranker, top-k orders by the fused score.
    unranked = {r: s for r, s in stages.items() if r not in ("features", "ranker")}
    steps = ensemble(PipelineSpec("search", 50, unranked), 3).steps
    assert [step.model for step in steps] == [names.SEARCH_QUERY, names.TOP_K]
    assert steps[0].output_map == {
        "candidate_indexes": "candidate_indexes",
        "candidate_scores": "fused_scores",
    }
    assert steps[1].input_map["candidate_scores"] == "fused_scores"


def test_a_release_with_a_composed_ranking_stage_runs_it_in_place_of_three():
    stages = {"query": Stage(names.SEARCH_QUERY, 3), "ranking": Stage(names.SEARCH_RANKING, 3)}
    spec = ensemble(PipelineSpec("search", 50, stages), 3)
    (query, ranking) = spec.steps
    assert (query.model, ranking.model) == (names.SEARCH_QUERY, names.SEARCH_RANKING)
    # The features stage's inputs, and the `k` the top-k stage reads.
    assert ranking.input_map == {
        "user_id": "user_id",
        "candidate_ids": "candidate_indexes",
        "candidate_scores": "retrieval_scores",
        "lexical_scores": "lexical_scores",
        "k": "k",
    }
    assert set(query.output_map.values()) == {
        "candidate_indexes",
        "retrieval_scores",
        "lexical_scores",
    }
    assert ranking.output_map == {
        "item_ids": "item_ids",
        "scores": "scores",
        "truncated": "truncated",
    }
    assert [t.name for t in spec.inputs] == ["query", "user_id", "k"]
    # A recommend release built before its ranking stage retrieved too still serves both.
    recommend = {
        "retrieval": Stage(names.RECOMMEND_RETRIEVAL, 4),
        "ranking": Stage(names.RECOMMEND_RANKING, 4),
    }
    steps = ensemble(PipelineSpec("recommend", 100, recommend), 4).steps
    assert [step.model for step in steps] == [names.RECOMMEND_RETRIEVAL, names.RECOMMEND_RANKING]
    assert "lexical_scores" not in steps[1].input_map
    assert steps[1].input_map["candidate_scores"] == "retrieval_scores"
    # One that retrieves in its ranking stage is that one step, the pipeline's inputs in.
    spec = ensemble(PipelineSpec("recommend", 100, {"ranking": recommend["ranking"]}), 5)
    (step,) = spec.steps
    assert step.model == names.RECOMMEND_RANKING
    assert step.input_map == {"user_id": "user_id", "k": "k"}
    assert step.output_map == ranking.output_map
    assert [t.name for t in spec.inputs] == ["user_id", "k"]


def write_manifests(repo, manifests: dict) -> None:
    """A manifest naming its parts (`depends_on`) for each (model, version) of `manifests`."""
    for (model, version), parts in manifests.items():
        folder = repo / model / str(version)
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"depends_on": parts}))


def test_a_release_apart_and_its_lineage_name_the_parts_of_each_composed_stage(tmp_path):
    manifests = {
        (names.SEARCH_QUERY, 3): {
            names.QUERY_TOKENIZER: 1,
            names.SEARCH_RETRIEVAL: 3,
            names.HYBRID_RETRIEVAL: 2,
        },
        (names.SEARCH_RETRIEVAL, 3): {names.QUERY_ENCODER_STATIC: 1, names.SEARCH_INDEX: 1},
        (names.SEARCH_RANKING, 3): {
            names.RANKING_FEATURES: 1,
            names.SEARCH_RANKER: 2,
            names.TOP_K: 1,
        },
    }
    write_manifests(tmp_path, manifests)
    stages = {"query": Stage(names.SEARCH_QUERY, 3), "ranking": Stage(names.SEARCH_RANKING, 3)}
    spec = PipelineSpec("search", 50, stages)
    separate = apart(tmp_path, spec)
    assert separate.stages == {
        "tokenizer": Stage(names.QUERY_TOKENIZER, 1),
        "retrieval": Stage(names.SEARCH_RETRIEVAL, 3),
        "hybrid": Stage(names.HYBRID_RETRIEVAL, 2),
        "features": Stage(names.RANKING_FEATURES, 1),
        "ranker": Stage(names.SEARCH_RANKER, 2),
        "top_k": Stage(names.TOP_K, 1),
    }
    assert [s.model for s in ensemble(separate, 3).steps] == RETRIEVAL_APART_STEPS
    found = lineage(tmp_path, spec)  # and the parts of the query stage's retrieval
    assert found["ranking"] == Stage(names.SEARCH_RANKING, 3)
    assert found["ranker"] == Stage(names.SEARCH_RANKER, 2)
    assert found["index"] == Stage(names.SEARCH_INDEX, 1)
    assert query_encoder(tmp_path, spec) == Stage(names.QUERY_ENCODER_STATIC, 1)
    assert apart(tmp_path, separate) == separate  # nothing composed: the release itself


def test_a_recommend_release_apart_names_the_retrieval_its_ranking_stage_holds(tmp_path):
    manifests = {
        (names.RECOMMEND_RANKING, 2): {
            names.RECOMMEND_RETRIEVAL: 2,
            names.RANKING_FEATURES: 1,
            names.RECOMMEND_RANKER: 1,
            names.TOP_K: 1,
        },
        (names.RECOMMEND_RETRIEVAL, 2): {names.USER_TOWER: 1, names.RECOMMEND_INDEX: 1},
    }
    write_manifests(tmp_path, manifests)
    spec = PipelineSpec("recommend", 100, {"ranking": Stage(names.RECOMMEND_RANKING, 2)})
    separate = apart(tmp_path, spec)
    assert set(separate.stages) == {"retrieval", "features", "ranker", "top_k"}
    steps = ensemble(separate, 2).steps
    assert [s.model for s in steps] == [
        names.RECOMMEND_RETRIEVAL,
        names.RANKING_FEATURES,
        names.RECOMMEND_RANKER,
        names.TOP_K,
    ]
    found = lineage(tmp_path, spec)
    assert found["user_tower"] == Stage(names.USER_TOWER, 1)
    assert found["index"] == Stage(names.RECOMMEND_INDEX, 1)
