"""The composed ranking stages, `search_ranking` (an ONNX ranker) and `recommend_ranking` (a
TensorFlow SavedModel, and recommend's exact retrieval graph): a release's features, ranker and
top-k stages in one Python model (`builders.runtime.ranking_model`), run in this process with a
fake `pb_utils`."""

import json
import shutil

import numpy as np
import pytest

from builders import names
from builders.offline import OfflinePipeline
from builders.repository import model_versions, read_manifest
from builders.specs import parse_pbtxt
from perf import inputs
from tests.fake_pb_utils import import_model, outputs

RANKING_MODULES = ("features", "topk", "features_model", "topk_model")
K = 10


def load_stage(repo, kind, tmp_path, monkeypatch):
    """The newest `kind` release's ranking stage, imported from a copy of its version folder."""
    model = names.RANKING_OF[kind]
    folder = tmp_path / "1"
    shutil.copytree(repo / model / str(model_versions(repo, kind)[-1]), folder)
    module = import_model(folder, *RANKING_MODULES, monkeypatch=monkeypatch)
    config = parse_pbtxt((repo / model / "config.pbtxt").read_text())
    stage = module.TritonPythonModel()
    stage.initialize({"model_config": json.dumps(config)})
    return stage


def request(candidates, row: int, user: int | None, k: int) -> dict:
    """The ranking stage's inputs for one request: row `row` of retrieval's `candidates` (in
    recommend, where the stage retrieves them itself, the user alone)."""
    if candidates is None:
        return {"user_id": np.array([[user]], np.int64), "k": np.array([[k]], np.int32)}
    return {
        "user_id": None if user is None else np.array([[user]], np.int64),
        "candidate_ids": candidates.indexes[row : row + 1],
        "candidate_scores": candidates.dense_scores[row : row + 1],
        "lexical_scores": (
            None if candidates.lexical_scores is None else candidates.lexical_scores[row : row + 1]
        ),
        "k": np.array([[k]], np.int32),
    }


@pytest.mark.parametrize("kind", [names.SEARCH, names.RECOMMEND])
def test_the_release_serves_its_ranking_stage_composed_of_its_own_stages(small_repository, kind):
    release = model_versions(small_repository, kind)[-1]
    pinned = OfflinePipeline(small_repository, kind, release)
    model = names.RANKING_OF[kind]
    folder = small_repository / model / str(release)
    parts = read_manifest(small_repository, model, release)["depends_on"]
    roles = ["features", "ranker", "top_k"]
    if kind == names.SEARCH:
        assert set(pinned.spec.stages) == {"query", "ranking"}
        assert not (folder / "retrieval.onnx").exists()
    else:  # and recommend's exact retrieval: a recommendation is one stage
        assert set(pinned.spec.stages) == {"ranking"}
        roles.append("retrieval")
        retrieval = pinned.stages["retrieval"]
        graph = small_repository / retrieval.model / str(retrieval.version) / "model.onnx"
        assert (folder / "retrieval.onnx").read_bytes() == graph.read_bytes()
    assert parts == {pinned.stages[r].model: pinned.stages[r].version for r in roles}
    config = parse_pbtxt((small_repository / model / "config.pbtxt").read_text())
    assert "response_cache" not in config  # it reads the user: each answer is personal
    ranker = "ranker.onnx" if kind == names.SEARCH else "ranker.savedmodel"
    assert (folder / ranker).exists()


@pytest.mark.parametrize("kind", [names.SEARCH, names.RECOMMEND])
def test_a_batch_answers_each_request_as_its_stages_apart_and_refuses_a_bad_one_alone(
    small_repository, tmp_path, monkeypatch, kind
):
    stage = load_stage(small_repository, kind, tmp_path, monkeypatch)
    offline = OfflinePipeline(small_repository, kind, model_versions(small_repository, kind)[-1])
    dataset = inputs.dataset_of(small_repository, kind)
    users = [int(u) for u in dataset.sample_user_ids(4, seed=3)]
    users[1] = 10**9  # an unknown user
    queries = ["red shoes", "waterproof hiking boots", "shoes", "a gift"]
    if kind == names.SEARCH:
        users[2] = None  # a search without a user
        candidates = offline.candidates(queries, users)
        expected = offline.run(K, queries, users)
    else:
        candidates = None  # the stage retrieves them
        expected = offline.run(K, None, users)
    requests = [request(candidates, row, user, K) for row, user in enumerate(users)]
    bad_k = request(candidates, 0, users[0], 0)
    refused = [bad_k]
    if candidates is not None:
        refused.append(
            request(candidates, 0, users[0], K)
            | {"candidate_scores": candidates.dense_scores[:1, :-1]}  # one score short
        )
    answers = [outputs(r) for r in stage.execute([*requests, *refused])]
    assert answers[len(requests)][0] == "INVALID_ARG"
    assert "at least 1, got 0" in answers[len(requests)][1]
    if candidates is not None:
        assert answers[-1][0] == "INVALID_ARG" and "same shape" in answers[-1][1]
    for answer, (item_ids, scores), single in zip(answers, expected, requests):
        np.testing.assert_array_equal(answer["item_ids"], item_ids[None])
        np.testing.assert_allclose(answer["scores"], scores[None], rtol=1e-5, atol=1e-6)
        assert not answer["truncated"].any()
        alone = outputs(stage.execute([single])[0])
        np.testing.assert_array_equal(answer["item_ids"], alone["item_ids"])
