"""Unit tests of the CPU backends' pure tensor logic."""

import numpy as np
import pytest

from server.backends.tensors import (
    ConfigError,
    RequestError,
    batch_key,
    check_request,
    concatenate,
    group_requests,
    parse_model_config,
    split_outputs,
)

CONFIG = {
    "name": "ranker",
    "max_batch_size": 8,
    "input": [
        {"name": "features", "data_type": "TYPE_FP32", "dims": ["4"]},
        {"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1]},
        {"name": "query", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
    ],
    "output": [
        {"name": "score", "data_type": "TYPE_FP32", "dims": [2], "reshape": {"shape": [1, 2]}}
    ],
    "parameters": {"intra_op_thread_count": {"string_value": "2"}},
}


@pytest.fixture
def spec():
    return parse_model_config(CONFIG, "model.onnx")


def request(batch=2, tokens=3, **overrides):
    arrays = {
        "features": np.ones((batch, 4), np.float32),
        "tokens": np.zeros((batch, tokens), np.int64),
    }
    arrays.update(overrides)
    return arrays


def test_parse_model_config(spec):
    assert spec.batching and spec.max_batch_size == 8
    assert [t.name for t in spec.inputs] == ["features", "tokens", "query"]
    assert spec.inputs[0].dims == (4,) and spec.inputs[0].dtype == np.float32
    assert spec.inputs[2].optional and spec.inputs[2].dtype == np.object_
    assert spec.outputs[0].model_dims == (1, 2)
    assert spec.int_parameter("intra_op_thread_count", 0) == 2
    assert spec.int_parameter("inter_op_thread_count", 0) == 0
    assert spec.default_model_filename == "model.onnx"


def test_bad_parameter_and_type_are_config_errors():
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_model_config(
            {**CONFIG, "parameters": {"intra_op_thread_count": {"string_value": "two"}}}, "m"
        ).int_parameter("intra_op_thread_count", 0)
    bad = {**CONFIG, "input": [{"name": "x", "data_type": "TYPE_BF16", "dims": [1]}]}
    with pytest.raises(ConfigError, match="unsupported type 'TYPE_BF16'"):
        parse_model_config(bad, "m")
    with pytest.raises(ConfigError, match="inputs and outputs"):
        parse_model_config({**CONFIG, "output": []}, "m")


def test_check_request_accepts_and_returns_batch(spec):
    assert check_request(spec, request(batch=3)) == 3
    strings = np.array([[b"red shoes"]], dtype=np.object_)
    assert check_request(spec, request(batch=1, query=strings)) == 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.ones((2, 4), np.float32)}, "missing input 'tokens'"),
        (request(features=np.ones((2, 4), np.float64)), "expected float32, got float64"),
        (
            request(features=np.ones((2, 5), np.float32)),
            r"shape \[2, 5\] does not match dims \[4\]",
        ),
        (request(extra=np.ones(1)), "unexpected input"),
        (request(batch=9), "exceeds max_batch_size 8"),
        (
            {"features": np.ones((2, 4), np.float32), "tokens": np.zeros((3, 1), np.int64)},
            "disagree on the batch size",
        ),
    ],
)
def test_check_request_rejects(spec, arrays, message):
    with pytest.raises(RequestError, match=message):
        check_request(spec, arrays)


def test_grouping_by_shape_keeps_order():
    keys = [batch_key(request(tokens=t)) for t in (3, 5, 3, 5, 7)]
    assert group_requests(keys) == [[0, 2], [1, 3], [4]]


def test_concatenate_and_split_round_trip(spec):
    requests = [request(batch=1), request(batch=3)]
    batch = concatenate(spec, requests)
    assert batch["features"].shape == (4, 4) and "query" not in batch
    outputs = {"score": np.arange(8, dtype=np.float64).reshape(4, 1, 2)}
    first, second = split_outputs(spec, outputs, [1, 3])
    assert first["score"].shape == (1, 1, 2) and second["score"].shape == (3, 1, 2)
    assert first["score"].dtype == np.float32
    np.testing.assert_array_equal(second["score"].ravel(), np.arange(2, 8))


def test_split_rejects_missing_or_wrong_sized_outputs(spec):
    with pytest.raises(ConfigError, match="did not produce output 'score'"):
        split_outputs(spec, {}, [1])
    with pytest.raises(ConfigError, match="batch size 3, expected 4"):
        split_outputs(spec, {"score": np.zeros((3, 1, 2))}, [1, 3])


def test_non_batching_model_checks_full_shape():
    spec = parse_model_config({**CONFIG, "max_batch_size": 0}, "m")
    assert check_request(spec, {"features": np.ones(4, np.float32), "tokens": np.ones(2, np.int64)})
    with pytest.raises(RequestError, match="does not match dims"):
        check_request(spec, request(batch=1))
