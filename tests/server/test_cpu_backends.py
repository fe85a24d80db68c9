"""The Python-based `onnxruntime` and `tensorflow` backends, through the real server."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from server import ServerError
from tests import tiny_models

PROTOCOLS = {"http": httpclient, "grpc": grpcclient}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def server(triton_server):
    """The session server with this module's models loaded."""
    repo = triton_server.model_repository
    tiny_models.write_ranker(repo, "ranker")
    tiny_models.write_ranker(
        repo,
        "ranker_batched",
        dynamic_batching={"max_queue_delay_microseconds": 100_000},
        instance_group=[{"count": 1, "kind": "KIND_CPU"}],
        parameters={"intra_op_thread_count": {"string_value": "1"}},
    )
    tiny_models.write_doubler(repo, "doubler")
    tiny_models.write_tower(repo, "tower")
    for name in ("ranker", "ranker_batched", "doubler", "tower"):
        triton_server.load_model(name)
    yield triton_server
    for name in ("ranker", "ranker_batched", "doubler", "tower"):
        triton_server.unload_model(name)


def client_for(server, protocol):
    module = PROTOCOLS[protocol]
    url = server.http_url if protocol == "http" else server.grpc_url
    return module, module.InferenceServerClient(url)


def infer(server, protocol, model, arrays, output):
    """One inference with numpy inputs; returns the named output."""
    module, client = client_for(server, protocol)
    try:
        inputs = []
        for name, array in arrays.items():
            tensor = module.InferInput(name, list(array.shape), _triton_dtype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(model, inputs).as_numpy(output)
    finally:
        client.close()


def _triton_dtype(array):
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(array.dtype)


def ranker_inputs(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.normal(size=(batch, 4)).astype(np.float32),
        "item_id": rng.integers(0, tiny_models.VOCAB, size=(batch, 1)).astype(np.int64),
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_onnx_parity(server, protocol):
    arrays = ranker_inputs(batch=5)
    session = ort.InferenceSession(
        str(server.model_repository / "ranker" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    expected = session.run(["score"], arrays)[0]
    served = infer(server, protocol, "ranker", arrays, "score")
    assert served.shape == (5, 3) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_savedmodel_parity(server, protocol):
    import tensorflow as tf

    features = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    loaded = tf.saved_model.load(str(server.model_repository / "tower" / "1" / "model.savedmodel"))
    expected = loaded.signatures["serving_default"](features=tf.constant(features))["output_0"]
    served = infer(server, protocol, "tower", {"features": features}, "output_0")
    np.testing.assert_allclose(served, expected.numpy(), atol=TOLERANCE, rtol=0)


def test_reshape_is_applied(server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(infer(server, "grpc", "doubler", {"x": x}, "y"), 2 * x)


def _concurrent_infer(server, model, requests):
    """Send requests concurrently over HTTP; return outputs or exceptions in order."""

    def one(arrays):
        try:
            return infer(server, "http", model, arrays, "score")
        except InferenceServerException as err:
            return err

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


def _model_stats(server, model):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()


def test_dynamic_batching_runs_fewer_executions_than_inferences(server):
    requests = [ranker_inputs(batch=1, seed=i) for i in range(24)]
    results = _concurrent_infer(server, "ranker_batched", requests)
    session = ort.InferenceSession(
        str(server.model_repository / "ranker_batched" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    for arrays, served in zip(requests, results):
        np.testing.assert_allclose(served, session.run(["score"], arrays)[0], atol=TOLERANCE)
    stats = _model_stats(server, "ranker_batched")
    assert int(stats["inference_count"]) >= 24
    assert int(stats["execution_count"]) < int(stats["inference_count"])


def test_bad_request_in_a_batch_fails_alone(server):
    before = _model_stats(server, "ranker_batched")
    good = [ranker_inputs(batch=2, seed=i) for i in range(6)]
    bad = ranker_inputs(batch=2, seed=99)
    bad["item_id"][1, 0] = 42  # outside the embedding table: ONNX Runtime's Gather fails
    results = _concurrent_infer(server, "ranker_batched", [*good[:3], bad, *good[3:]])
    after = _model_stats(server, "ranker_batched")

    error = results.pop(3)
    assert isinstance(error, InferenceServerException)
    assert "Gather" in str(error) and "idx=42" in str(error)
    assert all(isinstance(r, np.ndarray) and r.shape == (2, 3) for r in results)
    # The requests really were batched together before the bad one was isolated.
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert executions < 7
    assert server.is_ready()


BAD_INPUTS = {
    "wrong dtype": (
        {"features": np.ones((1, 4), np.float64), "item_id": np.zeros((1, 1), np.int64)},
        "inference input 'features' data-type is 'FP64', but model 'ranker' expects 'FP32'",
    ),
    "wrong shape": (
        {"features": np.ones((1, 5), np.float32), "item_id": np.zeros((1, 1), np.int64)},
        "unexpected shape for input 'features'",
    ),
    "missing input": (
        {"features": np.ones((1, 4), np.float32)},
        "expected 2 inputs but got 1 inputs for model 'ranker'",
    ),
    "batch above max_batch_size": (
        {"features": np.ones((9, 4), np.float32), "item_id": np.zeros((9, 1), np.int64)},
        "batch-size must be <= 8",
    ),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_client_error(server, protocol, case):
    arrays, message = BAD_INPUTS[case]
    with pytest.raises(InferenceServerException) as caught:
        infer(server, protocol, "ranker", arrays, "score")
    assert message in str(caught.value)
    assert server.is_ready() and server.is_model_ready("ranker")
    good = infer(server, protocol, "ranker", ranker_inputs(batch=1), "score")
    assert good.shape == (1, 3)


def _broken_copy(server, name):
    shutil.rmtree(server.model_repository / name, ignore_errors=True)
    return tiny_models.write_ranker(server.model_repository, name)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("syntax", "failed to load"),
        ("missing_file", "model.onnx does not exist"),
        ("wrong_input_name", "input 'item' is not in the ONNX model"),
        ("wrong_type", "input 'features' is tensor(float) in the ONNX model but float64"),
    ],
)
def test_model_that_fails_to_load_is_reported(server, breakage, message):
    name = f"broken_{breakage}"
    config = _broken_copy(server, name)
    model_dir = server.model_repository / name
    if breakage == "syntax":
        (model_dir / "config.pbtxt").write_text('name: "broken_syntax"\ninput [ { name: ')
    elif breakage == "missing_file":
        (model_dir / "1" / "model.onnx").unlink()
    elif breakage == "wrong_input_name":
        config["input"][1]["name"] = "item"
        tiny_models.write_config(model_dir, config)
    else:
        config["input"][0]["data_type"] = "TYPE_FP64"
        tiny_models.write_config(model_dir, config)
    with pytest.raises(ServerError) as caught:
        server.load_model(name)
    assert message in str(caught.value)
    assert f"{name!r}" in str(caught.value)
    assert server.is_ready()
    assert infer(server, "http", "ranker", ranker_inputs(batch=1), "score").shape == (1, 3)
    shutil.rmtree(model_dir)


def test_load_with_config_override_changes_batching(server):
    config = tiny_models.ranker_config("ranker_override", max_batch_size=2)
    tiny_models.write_ranker(server.model_repository, "ranker_override")
    server.load_model("ranker_override", config=config)
    try:
        with pytest.raises(InferenceServerException, match="batch-size must be <= 2"):
            infer(server, "http", "ranker_override", ranker_inputs(batch=3), "score")
        assert infer(server, "http", "ranker_override", ranker_inputs(batch=2), "score").shape == (
            2,
            3,
        )
    finally:
        server.unload_model("ranker_override")
    assert not server.is_model_ready("ranker_override")
