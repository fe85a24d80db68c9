"""LightGBM rankers served by the real tritonserver answer as the offline pipeline does.

A copy of the small repository gets its rankers rebuilt as LightGBM (`--ranker lambdamart`):
search release 2 ranks with LambdaMART beside release 1's DCN-v2. The recommend DCN is a
SavedModel (the tensorflow backend) and a model's versions share one config, so the copy
leaves out the recommend ranker and its release, and recommend release 2 is its first.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from builders import gbdt, names
from builders.build import BuildOptions, build
from builders.offline import OfflinePipeline
from builders.repository import read_manifest
from builders.specs import parse_pbtxt
from server import TritonServer

pytestmark = pytest.mark.slow

RECOMMEND_PARTS = ("recommend_ranker", "recommend", "recommend_v1")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, small_repository, small_dataset):
    path = tmp_path_factory.mktemp("lambdamart") / "repository"

    def recommend_parts(folder: str, found: list[str]) -> set[str]:
        return set(found) & set(RECOMMEND_PARTS) if folder == str(small_repository) else set()

    shutil.copytree(small_repository, path, ignore=recommend_parts)
    rankers = (names.SEARCH_RANKER, names.RECOMMEND_RANKER, names.SEARCH, names.RECOMMEND)
    options = BuildOptions(repo=path, only=rankers, ranker="lambdamart")
    build(options, small_dataset)
    return path


@pytest.fixture(scope="module")
def server(repo):
    with TritonServer(
        repo,
        model_control="explicit",
        # The ensembles load the stages they run; `make quality` also calls the ranker alone.
        load_models=[names.SEARCH, "search_v1", names.RECOMMEND, names.RECOMMEND_RANKER],
        exit_timeout_secs=5,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def call(client, model, k, query=None, user_id=None):
    inputs = {"k": np.array([[k]], np.int32)}
    if query is not None:
        inputs["query"] = np.array([[query.encode()]], dtype=object)
    if user_id is not None:
        inputs["user_id"] = np.array([[user_id]], np.int64)
    tensors = []
    for name, value in inputs.items():
        datatype = {"k": "INT32", "query": "BYTES", "user_id": "INT64"}[name]
        tensor = grpcclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    return result.as_numpy("item_ids")[0], result.as_numpy("scores")[0]


def test_the_rankers_are_lightgbm_in_onnx_and_stay_on_the_cpu_on_gpu_nodes(repo):
    for model in (names.SEARCH_RANKER, names.RECOMMEND_RANKER):
        manifest = read_manifest(repo, model, 2)
        assert manifest["metrics"]["ranker"] == "lambdamart"
        assert {"model.onnx", gbdt.MODEL_FILE} <= set(manifest["files"])
        assert manifest["parity"]["max_abs_diff"] <= gbdt.ONNX_ATOL
        gpu = parse_pbtxt((repo / model / "configs" / "gpu.pbtxt").read_text())
        assert gpu["platform"] == "onnxruntime_onnx"
        assert gpu["instance_group"][0]["kind"] == "KIND_CPU"
    objective = read_manifest(repo, names.SEARCH_RANKER, 2)["metrics"]["objective"]
    assert objective == "lambdarank"


def test_search_matches_the_offline_pipeline(repo, client, small_dataset):
    queries = small_dataset.interactions["query"].dropna().unique()[:6].tolist()
    users = [None, *small_dataset.interactions["user_id"].unique()[:5].tolist()]
    offline = OfflinePipeline(repo, names.SEARCH, 2)
    expected = offline.run(10, queries=queries, user_ids=users)
    for query, user, (ids, scores) in zip(queries, users, expected):
        served_ids, served_scores = call(client, names.SEARCH, 10, query, user)
        np.testing.assert_array_equal(served_ids, ids)
        np.testing.assert_allclose(served_scores, scores, atol=1e-5)
    dcn_ids, _ = call(client, "search_v1", 10, queries[0])
    assert len(dcn_ids) == 10  # release 1 keeps its DCN-v2 ranker


def test_recommend_matches_the_offline_pipeline(repo, client, small_dataset):
    users = small_dataset.interactions["user_id"].unique()[:8].tolist()
    expected = OfflinePipeline(repo, names.RECOMMEND, 2).run(10, user_ids=users)
    for user, (ids, scores) in zip(users, expected):
        served_ids, served_scores = call(client, names.RECOMMEND, 10, user_id=user)
        np.testing.assert_array_equal(served_ids, ids)
        np.testing.assert_allclose(served_scores, scores, atol=1e-5)
        assert ((served_scores >= 0) & (served_scores <= 1)).all()  # click probabilities


def test_make_quality_scores_a_lightgbm_recommend_ranker_offline_and_served(
    repo, server, small_dataset
):
    from clients.client import Client
    from perf.evaluation import quality

    with Client(server.grpc_url, timeout=60.0) as served:
        figures = quality.ranker_auc(repo, small_dataset, served)
    assert figures["ranker"] == "lambdamart"
    assert figures["test_groups"] > 0
    assert 0.5 < figures["offline_auc"] == figures["served_auc"]
