"""A built repository served by the real tritonserver: parity, bad input, pinned releases.

`search` and `recommend` are the ensembles of the newest release; `search_v<R>` serves
release R (`builders.pipelines`)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from builders import names
from builders.build import BuildOptions, build
from builders.data import load_dataset
from builders.offline import OfflinePipeline
from builders.pipelines import PipelineSpec, lineage, query_encoder, release_model
from builders.repository import VersionExistsError, model_versions, read_manifest, verify_version
from builders.specs import parse_pbtxt
from server import TritonServer

pytestmark = pytest.mark.slow

UNKNOWN_USER = 10**12


@pytest.fixture(scope="module")
def dataset(small_dataset):
    return small_dataset


@pytest.fixture(scope="module")
def repo(tmp_path_factory, small_repository, dataset):
    """The small repository plus search_ranker + search at version 2."""
    path = tmp_path_factory.mktemp("pinned") / "repository"
    shutil.copytree(small_repository, path)
    options = BuildOptions(repo=path, only=(names.SEARCH_RANKER, names.SEARCH), seed=7)
    build(options, dataset)
    return path


@pytest.fixture(scope="module")
def server(repo):
    # Verbose logging: the log names every warm-up sample each instance runs.
    with TritonServer(
        repo, model_control="explicit", load_models=["*"], exit_timeout_secs=5, log_verbose=1
    ) as triton:
        yield triton


@pytest.fixture
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def _input(name, value, datatype):
    tensor = grpcclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def call(client, model, k, query=None, user_id=None, version=None):
    """One request to pipeline `model`, or to its release `version`."""
    if version is not None:
        model = release_model(model, version)
    inputs = [_input("k", np.array([[k]], np.int32), "INT32")]
    if query is not None:
        raw = query if isinstance(query, bytes) else query.encode()
        inputs.append(_input("query", np.array([[raw]], dtype=object), "BYTES"))
    if user_id is not None:
        inputs.append(_input("user_id", np.array([[user_id]], np.int64), "INT64"))
    result = client.infer(model, inputs)
    return (
        result.as_numpy("item_ids")[0],
        result.as_numpy("scores")[0],
        bool(result.as_numpy("truncated")[0, 0]),
    )


def test_every_version_is_intact_and_pinned(repo):
    for model in names.ALL_MODELS:
        for version in model_versions(repo, model):
            assert verify_version(repo, model, version) == []
    search_v1 = read_manifest(repo, names.SEARCH, 1)["depends_on"]
    search_v2 = read_manifest(repo, names.SEARCH, 2)["depends_on"]
    # Each release serves its features, ranker and top-k as one model, composed for it.
    assert search_v1[names.SEARCH_RANKING] == 1 and search_v2[names.SEARCH_RANKING] == 2
    for release_number in (1, 2):
        ranking = read_manifest(repo, names.SEARCH_RANKING, release_number)["depends_on"]
        assert ranking[names.SEARCH_RANKER] == release_number
    release = OfflinePipeline(repo, names.SEARCH, 2).spec
    encoder = query_encoder(repo, release)
    assert encoder.model in names.QUERY_ENCODERS and encoder.version == 1
    # Each release serves its tokenizer, retrieval and hybrid stages as one model, composed for
    # it, and its retrieval is its encoder and exact index as one graph, composed for it too.
    query = release.stages["query"]
    assert search_v1[names.SEARCH_QUERY] == 1 and search_v2[names.SEARCH_QUERY] == 2
    parts = read_manifest(repo, query.model, query.version)["depends_on"]
    assert parts[names.SEARCH_RETRIEVAL] == 2
    composed = read_manifest(repo, names.SEARCH_RETRIEVAL, 2)
    assert composed["depends_on"] == {encoder.model: 1, names.SEARCH_INDEX: 1}
    assert composed["parity"]["max_abs_diff"] <= 1e-5
    ranker = read_manifest(repo, names.SEARCH_RANKER, 2)
    assert ranker["metrics"]["auc"] > 0.6 and ranker["parity"]
    policy = parse_pbtxt((repo / names.SEARCH_RANKER / "config.pbtxt").read_text())
    assert policy["version_policy"] == {"specific": {"versions": ["1", "2"]}}


def test_every_model_warms_up_before_it_is_ready(repo, server):
    """Each model but the ensembles runs its warm-up sample on every instance at load; a
    warm-up request the model refuses would have failed the load."""
    log = server.log_path.read_text()
    releases = tuple(p.name for p in repo.glob("*_v*"))
    for model in names.ALL_MODELS + names.COMPOSED_STAGES + releases:
        config = parse_pbtxt((repo / model / "config.pbtxt").read_text())
        if config.get("platform") == "ensemble":
            assert "model_warmup" not in config
            continue
        assert server.is_model_ready(model), model
        assert f"model '{model}' instance {model}_0_0 is running warmup sample 'warmup'" in log
    assert (repo / names.QUERY_TOKENIZER / "warmup" / "query").read_bytes() == (
        len(names.WARMUP_QUERY).to_bytes(4, "little") + names.WARMUP_QUERY.encode()
    )


def test_the_entry_points_are_ensembles_of_their_releases(repo):
    def config(model):
        return parse_pbtxt((repo / model / "config.pbtxt").read_text())

    for model in (names.SEARCH, "search_v1", "search_v2", names.RECOMMEND, "recommend_v1"):
        assert config(model)["platform"] == "ensemble", model
    rankers = {
        model: next(
            s["model_version"]
            for s in config(model)["ensemble_scheduling"]["step"]
            if s["model_name"] == names.SEARCH_RANKING
        )
        for model in (names.SEARCH, "search_v1", "search_v2")
    }
    assert rankers == {names.SEARCH: "2", "search_v1": "1", "search_v2": "2"}
    assert config(names.SEARCH)["version_policy"] == {"specific": {"versions": ["2"]}}
    assert (repo / "search_v2" / "2").is_dir() and not (repo / "recommend_v2").exists()


@pytest.mark.parametrize("version", [1, 2])
def test_search_matches_the_offline_pipeline(repo, client, dataset, version):
    queries = dataset.sample_queries(6, seed=5)
    users = [None, *dataset.sample_user_ids(4, seed=5).tolist(), UNKNOWN_USER]
    expected = OfflinePipeline(repo, "search", version).run(10, queries=queries, user_ids=users)
    for query, user, (ids, scores) in zip(queries, users, expected):
        served_ids, served_scores, truncated = call(client, "search", 10, query, user, version)
        np.testing.assert_array_equal(served_ids, ids)
        np.testing.assert_allclose(served_scores, scores, atol=1e-5)
        assert not truncated


def test_both_pipeline_versions_answer_with_their_own_rankers(repo, client, dataset):
    queries = dataset.sample_queries(8, seed=11)
    differ = 0
    for query in queries:
        v1 = call(client, "search", 10, query, version=1)
        v2 = call(client, "search", 10, query, version=2)
        differ += not np.allclose(v1[1], v2[1])
    assert differ > 0  # version 2's ranker (another seed) scores differently


def test_recommend_matches_the_offline_pipeline(repo, client, dataset):
    users = [*dataset.sample_user_ids(5, seed=2).tolist(), UNKNOWN_USER]
    expected = OfflinePipeline(repo, "recommend", 1).run(10, user_ids=users)
    for user, (ids, scores) in zip(users, expected):
        served_ids, served_scores, _ = call(client, "recommend", 10, user_id=user)
        np.testing.assert_array_equal(served_ids, ids)
        np.testing.assert_allclose(served_scores, scores, atol=1e-5)


def test_unknown_user_gets_popular_items(client, dataset):
    ids, _, _ = call(client, "recommend", 20, user_id=UNKNOWN_USER)
    popular = dataset.item_popularity(weighted=True).nlargest(100).index
    assert len(set(ids) & set(popular)) >= 5


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        ("", 5, "empty query"),
        ("   ", 5, "empty query"),
        ("\x00\x01\x02", 5, "empty query"),
        ("\U0001f600\U0001f44d", 5, "empty query"),
        ("?!...", 5, "empty query"),
        ("shoes", 0, "'k' must be at least 1, got 0"),
        ("shoes", -4, "'k' must be at least 1, got -4"),
    ],
)
def test_bad_search_input_is_a_clear_error(server, client, query, k, message):
    with pytest.raises(InferenceServerException) as caught:
        call(client, "search", k, query)
    assert message in str(caught.value)
    assert "INVALID_ARGUMENT" in str(caught.value)
    assert server.is_ready()


def test_odd_queries_still_answer(client):
    huge = b"red running shoes " * 6_000  # 108 KB, cut to 4,096 characters
    for query in (huge, b"caf\xe9 \xff\xfe shoes", "🙂 running shoes".encode()):
        ids, scores, _ = call(client, "search", 5, query)
        assert len(ids) == 5 and np.isfinite(scores).all()


def test_k_larger_than_the_candidates_returns_what_exists(client):
    ids, _, truncated = call(client, "search", 10_000, "backpack")
    assert len(ids) == 50 and truncated
    ids, _, truncated = call(client, "recommend", 10_000, user_id=UNKNOWN_USER)
    assert len(ids) == 50 and truncated


def test_missing_user_for_recommend_is_a_clear_error(client):
    with pytest.raises(InferenceServerException, match="expected 2 inputs|user_id"):
        call(client, "recommend", 5)


def test_one_bad_request_in_a_batch_fails_alone(server, client):
    queries = ["running shoes", "", "silk dress", "headphones", " ", "backpack"] * 2

    def one(query):
        local = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return call(local, "search", 5, query)
        except InferenceServerException as err:
            return err
        finally:
            local.close()

    with ThreadPoolExecutor(len(queries)) as pool:
        results = list(pool.map(one, queries))
    for query, result in zip(queries, results):
        if query.strip():
            assert isinstance(result, tuple) and len(result[0]) == 5
        else:
            assert isinstance(result, InferenceServerException)
    assert server.is_ready()


def test_existing_version_is_refused_before_any_work(repo, dataset):
    before = {m: model_versions(repo, m) for m in names.ALL_MODELS}
    with pytest.raises(VersionExistsError, match="version 2 already exists for search_ranker"):
        build(BuildOptions(repo=repo, version=2, only=(names.SEARCH_RANKER,)), dataset)
    assert {m: model_versions(repo, m) for m in names.ALL_MODELS} == before


def test_stages_from_other_data_are_refused(repo, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    other = load_dataset("synthetic", seed=4, n_items=1500, n_users=300)
    with pytest.raises(Exception, match="were built from other data"):
        build(BuildOptions(repo=copy, only=(names.SEARCH,)), other)
    assert model_versions(copy, names.SEARCH) == [1, 2]


def test_catalog_only_search_falls_back_to_retrieval_order(tmp_path, dataset):
    catalog = tmp_path / "catalog.csv"
    dataset.catalog.head(300)[["item_id", "title", "category", "brand", "price"]].to_csv(
        catalog, index=False
    )
    only_catalog = load_dataset("files", catalog=catalog)
    repo = tmp_path / "repo"
    context = build(BuildOptions(repo=repo, num_candidates=20), only_catalog)
    assert names.RECOMMEND not in context.built and names.SEARCH_RANKER not in context.built
    stages = json.loads((repo / "search" / "1" / "pipeline.json").read_text())["stages"]
    assert set(stages) == {"query", "top_k"}  # the tokenizer, retrieval and hybrid in one
    parts = lineage(repo, PipelineSpec.load(repo / "search" / "1" / "pipeline.json"))
    assert {"tokenizer", "retrieval", "hybrid"} <= set(parts)
    with TritonServer(repo, exit_timeout_secs=5) as triton:
        local = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            ids, scores, _ = call(local, "search", 5, "running shoes")
            with pytest.raises(InferenceServerException, match="expected 2 inputs but got 3"):
                call(local, "search", 5, "running shoes", user_id=3)  # no stage personalises
        finally:
            local.close()
    expected_ids, expected_scores = OfflinePipeline(repo, "search", 1).run(
        5, queries=["running shoes"]
    )[0]
    np.testing.assert_array_equal(ids, expected_ids)
    assert (np.diff(scores) <= 1e-6).all()  # fused order (reciprocal rank), best first


def test_a_missing_stage_takes_out_only_the_pipelines_that_use_it(server, client):
    server.unload_model(names.SEARCH_RANKING)
    try:
        for release in (None, 1, 2):
            with pytest.raises(InferenceServerException, match="has no available versions"):
                call(client, "search", 5, "running shoes", version=release)
        assert server.is_ready()
        # recommend does not use the search ranking stage and keeps answering
        assert len(call(client, "recommend", 5, user_id=UNKNOWN_USER)[0]) == 5
    finally:
        server.load_model(names.SEARCH_RANKING)
    # loading the stage brings back the ensembles that depend on it
    for release in (None, 1, 2):
        assert len(call(client, "search", 5, "running shoes", version=release)[0]) == 5


def test_the_response_cache_answers_repeated_queries_at_every_query_only_stage(repo, client):
    """With a cache, a repeated query (with any user) skips every stage before the
    personalised ranking; same answers."""
    query, users = "wool winter coat", [None, 3, UNKNOWN_USER]
    expected = [call(client, "search", 5, query, user) for user in users]
    release = OfflinePipeline(repo, names.SEARCH, 2).spec.stages
    pinned = {release["query"].model: release["query"].version}  # the three stages in one
    assert set(pinned) <= set(names.QUERY_ONLY_STAGES)
    with TritonServer(
        repo, model_control="explicit", load_models=["*"], exit_timeout_secs=5,
        response_cache_mb=16,
    ) as cached:  # fmt: skip
        local = grpcclient.InferenceServerClient(cached.grpc_url)
        try:
            for _ in range(2):
                for user, (ids, scores, _) in zip(users, expected):
                    served_ids, served_scores, _ = call(local, "search", 5, query, user)
                    np.testing.assert_array_equal(served_ids, ids)
                    np.testing.assert_allclose(served_scores, scores, atol=1e-5)
            stats = {m: local.get_inference_statistics(m, as_json=True) for m in pinned}
        finally:
            local.close()
    for stage, served_version in pinned.items():
        (version,) = [s for s in stats[stage]["model_stats"] if s["version"] == str(served_version)]
        hits = int(version["inference_stats"].get("cache_hit", {}).get("count", 0))
        computed = int(version["inference_stats"].get("cache_miss", {}).get("count", 0))
        assert (hits, computed) == (5, 1), stage
