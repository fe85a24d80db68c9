"""The composed `search_query` stage: a release's tokenizer, retrieval and hybrid stages in one
Python model (`builders.runtime.query_model`), run in this process with a fake `pb_utils`."""

import json
import shutil

import numpy as np
import pytest

from builders import names
from builders.build import BuildOptions, build
from builders.offline import OfflinePipeline
from builders.pipelines import PIPELINE_FILE, PipelineSpec
from builders.repository import model_versions, read_manifest
from builders.specs import parse_pbtxt
from tests.fake_pb_utils import import_model, outputs

QUERY_MODULES = (
    "lexical",
    "synonyms",
    "fusion",
    "tokenization",
    "tokenizer_model",
    "hybrid_model",
)


@pytest.fixture(scope="module")
def release(small_repository):
    return model_versions(small_repository, names.SEARCH)[-1]


@pytest.fixture
def stage(small_repository, release, tmp_path, monkeypatch):
    """The release's query stage, imported from a copy of its version folder."""
    folder = tmp_path / "1"
    shutil.copytree(small_repository / names.SEARCH_QUERY / str(release), folder)
    model = import_model(folder, *QUERY_MODULES, monkeypatch=monkeypatch)
    config = parse_pbtxt((small_repository / names.SEARCH_QUERY / "config.pbtxt").read_text())
    stage = model.TritonPythonModel()
    stage.initialize({"model_config": json.dumps(config)})
    return stage


def request(*queries: str) -> dict:
    return {"query": np.array([[q.encode()] for q in queries], dtype=object)}


def test_the_release_serves_its_query_stage_composed_of_its_own_stages(small_repository, release):
    pinned = OfflinePipeline(small_repository, names.SEARCH, release)
    assert pinned.spec.stages["query"] == pinned.stages["query"]
    assert not {"tokenizer", "retrieval", "hybrid"} & set(pinned.spec.stages)
    parts = read_manifest(small_repository, names.SEARCH_QUERY, release)["depends_on"]
    assert parts == {
        names.QUERY_TOKENIZER: pinned.stages["tokenizer"].version,
        names.SEARCH_RETRIEVAL: pinned.stages["retrieval"].version,
        names.HYBRID_RETRIEVAL: pinned.stages["hybrid"].version,
    }
    config = parse_pbtxt((small_repository / names.SEARCH_QUERY / "config.pbtxt").read_text())
    assert config["response_cache"] == {"enable": True}  # it reads the query alone


def test_a_batch_answers_each_request_as_its_stages_apart_and_refuses_an_empty_query_alone(
    stage, small_repository, release
):
    offline = OfflinePipeline(small_repository, names.SEARCH, release)
    # Different lengths pad to different widths (the tokenizer's buckets): the encoder runs
    # each width's requests together, and the answers come back in request order.
    queries = [
        "red shoes",
        "a very long query about waterproof hiking boots for the winter mountains with laces",
        "!!!",
        "shoes",
    ]
    batched = [outputs(r) for r in stage.execute([request(q) for q in queries])]
    assert batched[2][0] == "INVALID_ARG" and "has no letters or digits" in batched[2][1]
    for query, answer in zip(queries, batched):
        if query == "!!!":
            continue
        alone = outputs(stage.execute([request(query)])[0])
        expected = offline.candidates([query])
        for name, wanted in zip(
            (
                "candidate_indexes",
                "candidate_scores",
                "candidate_dense_scores",
                "candidate_lexical_scores",
            ),
            expected,
        ):
            np.testing.assert_array_equal(answer[name], alone[name])
            np.testing.assert_allclose(answer[name], wanted, rtol=1e-5, atol=1e-6)
    # A request of two queries is answered as two rows.
    two = outputs(stage.execute([request("red shoes", "shoes")])[0])
    np.testing.assert_array_equal(
        two["candidate_indexes"],
        np.concatenate([batched[0]["candidate_indexes"], batched[3]["candidate_indexes"]]),
    )


def test_a_gpu_profile_release_keeps_its_stages_apart(small_repository, small_dataset, tmp_path):
    """On GPU nodes the encoder and the ranker run in stages of their own (NVIDIA's backends,
    on the GPU)."""
    repo = tmp_path / "repo"
    shutil.copytree(small_repository, repo)
    options = BuildOptions(repo=repo, profile="gpu", only=(names.SEARCH,))
    build(options, small_dataset)
    release = model_versions(repo, names.SEARCH)[-1]
    stages = PipelineSpec.load(repo / names.SEARCH / str(release) / PIPELINE_FILE).stages
    assert "query" not in stages
    assert {"tokenizer", "retrieval", "hybrid"} <= set(stages)
    assert "ranking" not in stages and {"features", "ranker", "top_k"} <= set(stages)
    for composed in (names.SEARCH_QUERY, names.SEARCH_RANKING):
        assert model_versions(repo, composed) == [1]  # the cpu release's, untouched
