"""The ranker features: tables, `ranker_inputs`, and the `features` Python model in Triton."""

from __future__ import annotations

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from builders.data import Dataset, load_dataset
from builders.ranker import build_tables
from builders.runtime import features
from builders.runtime.features import (
    DENSE_FEATURES,
    NUM_DENSE,
    NUM_SPARSE,
    PRICE_BUCKETS,
    SPARSE_FEATURES,
    FeatureError,
    FeatureTables,
    ranker_inputs,
)
from tests.fake_pb_utils import load_model, outputs

RUNTIME = Path(features.__file__).parent
UNKNOWN_USER_ID = -12345


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset("synthetic", n_items=300, n_users=80)


@pytest.fixture(scope="module")
def tables(dataset: Dataset) -> FeatureTables:
    return build_tables(dataset)


def candidates(tables: FeatureTables, batch: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    user_ids = rng.choice(tables.user_ids, size=batch)
    item_indexes = rng.integers(0, tables.n_items, size=(batch, n))
    scores = rng.uniform(-1, 1, size=(batch, n)).astype(np.float32)
    return user_ids, item_indexes, scores


def test_columns_are_documented_constants():
    assert NUM_SPARSE == len(SPARSE_FEATURES) == 5
    assert NUM_DENSE == len(DENSE_FEATURES) == 5


def test_shapes_dtypes_and_lookups(tables):
    user_ids, item_indexes, scores = candidates(tables, batch=3, n=6)
    sparse, dense = ranker_inputs(tables, user_ids, item_indexes, scores)
    assert sparse.shape == (3, 6, NUM_SPARSE) and sparse.dtype == np.int64
    assert dense.shape == (3, 6, NUM_DENSE) and dense.dtype == np.float32

    column = {name: sparse[..., i] for i, name in enumerate(SPARSE_FEATURES)}
    each_candidate_user = np.broadcast_to(user_ids[:, None], item_indexes.shape)
    np.testing.assert_array_equal(tables.user_ids[column["user"] - 1], each_candidate_user)
    np.testing.assert_array_equal(column["item"], item_indexes + 1)
    np.testing.assert_array_equal(column["category"], tables.item_category[item_indexes + 1])
    np.testing.assert_array_equal(dense[..., 0], scores)
    assert (dense[..., 1] == 0).all()  # no lexical stage
    assert (sparse >= 0).all() and (sparse < np.array(tables.vocabulary_sizes)).all()


def test_lexical_scores_are_a_dense_column(tables):
    user_ids, item_indexes, scores = candidates(tables, batch=2, n=4)
    lexical = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    item_indexes[:, 3] = -1
    _, dense = ranker_inputs(tables, user_ids, item_indexes, scores, lexical)
    np.testing.assert_array_equal(dense[:, :3, 1], lexical[:, :3])
    assert (dense[:, 3] == 0).all()
    with pytest.raises(FeatureError, match="lexical scores"):
        ranker_inputs(tables, user_ids, item_indexes, scores, lexical[:, :2])
    with pytest.raises(FeatureError, match="finite"):
        ranker_inputs(tables, user_ids, item_indexes, scores, np.full_like(lexical, np.nan))


def test_unknown_and_absent_users_get_the_cold_start_row(tables):
    _, item_indexes, scores = candidates(tables, batch=2, n=5)
    unknown = np.array([UNKNOWN_USER_ID, tables.user_ids.max() + 1])
    sparse, dense = ranker_inputs(tables, unknown, item_indexes, scores)
    assert (sparse[..., 0] == 0).all()
    everybody = tables.user_category_affinity[0, tables.item_category[item_indexes + 1]]
    np.testing.assert_allclose(dense[..., 3], everybody)
    absent_sparse, absent_dense = ranker_inputs(tables, None, item_indexes, scores)
    np.testing.assert_array_equal(absent_sparse, sparse)
    np.testing.assert_array_equal(absent_dense, dense)


def test_padding_candidates_are_all_zero(tables):
    user_ids, item_indexes, scores = candidates(tables, batch=2, n=4)
    item_indexes[:, 2:] = -1
    scores[:, 2:] = -np.inf  # whatever retrieval puts there is ignored
    sparse, dense = ranker_inputs(tables, user_ids, item_indexes, scores)
    assert (sparse[:, 2:, 1:] == 0).all() and (dense[:, 2:] == 0).all()
    assert (sparse[:, :2, 1] > 0).all() and np.isfinite(dense).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda u, i, s: (u, i + 10_000, s), "outside"),
        (lambda u, i, s: (u, np.full_like(i, -2), s), "outside"),
        (lambda u, i, s: (u, i, s[:, :2]), "same shape"),
        (lambda u, i, s: (u, i[0], s[0]), r"\[batch, candidates\]"),
        (lambda u, i, s: (u[:1], i, s), "user ids"),
        (lambda u, i, s: (u, i, np.full_like(s, np.nan)), "finite"),
    ],
)
def test_malformed_inputs_raise_feature_error(tables, change, message):
    with pytest.raises(FeatureError, match=message):
        ranker_inputs(tables, *change(*candidates(tables, batch=2, n=3)))


def test_user_ids_in_any_order_map_to_their_positions(tables):
    shuffled = np.random.default_rng(0).permutation(tables.user_ids)
    reordered = dataclasses.replace(tables, user_ids=shuffled)
    asked = np.append(shuffled[[5, 0, 17]], shuffled.max() + 1)
    assert reordered.user_indexes(asked).tolist() == [6, 1, 18, 0]
    with pytest.raises(ValueError, match="user_ids must be unique"):
        dataclasses.replace(tables, user_ids=np.append(shuffled[1:], shuffled[1]))


def test_tables_round_trip(tables, tmp_path):
    path = tmp_path / "tables.npz"
    tables.save(path)
    loaded = FeatureTables.load(path)
    for name in vars(tables):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(tables, name))
    inputs = candidates(tables, batch=4, n=8)
    for expected, actual in zip(ranker_inputs(tables, *inputs), ranker_inputs(loaded, *inputs)):
        np.testing.assert_array_equal(actual, expected)


def test_tables_for_other_feature_columns_are_refused(tables, tmp_path, monkeypatch):
    path = tmp_path / "tables.npz"
    tables.save(path)
    monkeypatch.setattr(features, "DENSE_FEATURES", (*DENSE_FEATURES, "extra"))
    with pytest.raises(ValueError, match="built for features"):
        FeatureTables.load(path)


def test_tables_from_the_synthetic_catalog(tables, dataset):
    assert tables.vocabulary_sizes == (
        dataset.users["user_id"].nunique() + 1,
        len(dataset.catalog) + 1,
        dataset.catalog["category"].nunique() + 1,
        dataset.catalog["brand"].nunique() + 1,
        PRICE_BUCKETS + 1,
    )
    buckets = tables.item_price_bucket[1:]
    assert buckets.min() >= 1 and buckets.max() == PRICE_BUCKETS
    assert tables.item_log_popularity.max() == pytest.approx(1.0)
    # Shares over categories: each user row sums to one.
    np.testing.assert_allclose(tables.user_category_affinity.sum(axis=1), 1.0, rtol=1e-5)


def test_missing_brand_price_and_log_give_zero_features():
    movielens = load_dataset("movielens-100k")
    catalog_only = Dataset(name="catalog", catalog=movielens.catalog)
    tables = build_tables(catalog_only)
    assert tables.n_users == 0 and (tables.item_brand == 0).all()
    assert (tables.item_price_bucket == 0).all() and (tables.item_log_popularity == 0).all()
    sparse, dense = ranker_inputs(
        tables, np.array([7]), np.array([[0, 5, -1]]), np.ones((1, 3), np.float32)
    )
    assert (sparse[..., 0] == 0).all() and (dense[..., 1:] == 0).all()


# --- the Python-backend model, with a fake `triton_python_backend_utils` ---------------------


def test_model_batch_equals_each_request_alone(tables, tmp_path, monkeypatch):
    """Requests with and without a user or lexical scores, of two candidate counts, and a
    malformed one: one `ranker_inputs` call per group, the same answers as alone."""
    model = load_model(tmp_path, "features_model", "features", monkeypatch=monkeypatch)
    tables.save(tmp_path / "tables.npz")
    stage = model.TritonPythonModel()
    stage.initialize({})
    requests = []
    for seed in range(8):
        user_ids, item_indexes, scores = candidates(tables, batch=1, n=6 + seed % 2, seed=seed)
        request = {"candidate_ids": item_indexes, "candidate_scores": scores}
        if seed % 3:
            request["user_id"] = user_ids.reshape(1, 1)
        if seed % 4:
            request["lexical_scores"] = np.abs(scores)
        requests.append(request)
    requests[5]["candidate_ids"] = requests[5]["candidate_ids"] + tables.n_items
    batched = [outputs(r) for r in stage.execute(requests)]
    assert batched[5][0] == "INVALID_ARG" and "outside" in batched[5][1]
    for index, (request, answer) in enumerate(zip(requests, batched)):
        if index == 5:
            continue
        user_ids = request.get("user_id")
        expected = ranker_inputs(
            tables,
            None if user_ids is None else user_ids.reshape(-1),
            request["candidate_ids"],
            request["candidate_scores"],
            request.get("lexical_scores"),
        )
        alone = outputs(stage.execute([request])[0])
        for name, wanted in zip(("sparse", "dense"), expected):
            np.testing.assert_array_equal(answer[name], wanted)
            np.testing.assert_array_equal(alone[name], wanted)
            assert answer[name].dtype == wanted.dtype and answer[name].shape == wanted.shape


# --- the Python-backend model in the real server -----------------------------------------


def write_features_model(repo: Path, tables: FeatureTables, name: str) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    shutil.copy(RUNTIME / "features.py", version / "features.py")
    shutil.copy(RUNTIME / "stage_glue.py", version / "stage_glue.py")
    shutil.copy(RUNTIME / "features_model.py", version / "model.py")
    tables.save(version / "tables.npz")

    def tensor(tensor_name, data_type, dims, **extra):
        return {"name": tensor_name, "data_type": data_type, "dims": dims, **extra}

    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": 8,
        "input": [
            tensor("user_id", "TYPE_INT64", [1], optional=True),
            tensor("candidate_ids", "TYPE_INT64", [-1]),
            tensor("candidate_scores", "TYPE_FP32", [-1]),
        ],
        "output": [
            tensor("sparse", "TYPE_INT64", [-1, NUM_SPARSE]),
            tensor("dense", "TYPE_FP32", [-1, NUM_DENSE]),
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": 100_000},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(message))


def infer_features(client, name, candidate_ids, scores, user_ids=None):
    arrays = {"candidate_ids": candidate_ids, "candidate_scores": scores}
    if user_ids is not None:
        arrays["user_id"] = user_ids.reshape(-1, 1)
    inputs = []
    for tensor_name, array in arrays.items():
        dtype = "INT64" if array.dtype == np.int64 else "FP32"
        tensor = grpcclient.InferInput(tensor_name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(name, inputs)
    return result.as_numpy("sparse"), result.as_numpy("dense")


def attempt(client, name, candidate_ids, scores) -> str:
    try:
        infer_features(client, name, candidate_ids, scores)
    except InferenceServerException as error:
        return f"{error.status()}: {error.message()}"
    return "ok"


def test_served_features_equal_ranker_inputs(triton_server, tables):
    name = "features_under_test"
    write_features_model(triton_server.model_repository, tables, name)
    triton_server.load_model(name)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        user_ids, item_indexes, scores = candidates(tables, batch=3, n=7)
        user_ids[1] = UNKNOWN_USER_ID
        item_indexes[2, 5:] = -1
        served = infer_features(client, name, item_indexes, scores, user_ids)
        for actual, expected in zip(served, ranker_inputs(tables, user_ids, item_indexes, scores)):
            np.testing.assert_array_equal(actual, expected)

        served = infer_features(client, name, item_indexes, scores)  # no user_id
        for actual, expected in zip(served, ranker_inputs(tables, None, item_indexes, scores)):
            np.testing.assert_array_equal(actual, expected)

        # Requests batched together: the malformed one fails alone.
        requests = [item_indexes, item_indexes + tables.n_items, item_indexes]
        with ThreadPoolExecutor(len(requests)) as pool:
            outcomes = list(pool.map(lambda c: attempt(client, name, c, scores), requests))
        assert outcomes[0] == outcomes[2] == "ok"
        assert "INVALID_ARG" in outcomes[1] and "outside" in outcomes[1]
        assert client.is_model_ready(name)
    finally:
        client.close()
        triton_server.unload_model(name)
