"""Pure logic of the pipeline models: request checks and top-k."""

import numpy as np
import pytest

from builders.runtime.pipeline import (
    MAX_QUERY_CHARS,
    NO_USER,
    PipelineRequestError,
    PipelineSpec,
    Stage,
    parse_k,
    parse_query,
    parse_user_id,
    top_k,
)


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
    with pytest.raises(PipelineRequestError, match=message):
        parse_k(value)


def test_large_k_is_kept_for_the_truncation_signal():
    assert parse_k(np.array([[10**6]], np.int64)) == 10**6


def test_query_parsing():
    assert parse_query(np.array([[b"  red shoes "]], dtype=object)) == "red shoes"
    assert parse_query(np.array([[b"caf\xe9"]], dtype=object)) == "caf\ufffd"
    assert len(parse_query(np.array([[b"x" * 100_000]], dtype=object))) == MAX_QUERY_CHARS
    for bad in (np.array([[b""]], dtype=object), np.array([[b" \t "]], dtype=object)):
        with pytest.raises(PipelineRequestError, match="'query' is empty"):
            parse_query(bad)
    with pytest.raises(PipelineRequestError, match="'query' is required"):
        parse_query(None)


def test_user_id_parsing():
    assert parse_user_id(None, required=False) == NO_USER
    assert parse_user_id(np.array([[42]], np.int64), required=True) == 42
    with pytest.raises(PipelineRequestError, match="'user_id' is required"):
        parse_user_id(None, required=True)


def test_top_k_orders_by_score_and_drops_padding():
    indexes, scores = top_k(
        np.array([5, 9, -1, 2, 7]), np.array([0.1, 0.9, 0.99, 0.5, 0.9], np.float32), 3
    )
    np.testing.assert_array_equal(indexes, [9, 7, 2])
    assert scores.dtype == np.float32
    assert len(top_k(np.array([1, -1]), np.array([0.3, 0.4]), 10)[0]) == 1


def test_spec_json_round_trip(tmp_path):
    spec = PipelineSpec("search", 100, {"encoder": Stage("text_encoder", 2)})
    (tmp_path / "pipeline.json").write_text(spec.to_json())
    assert PipelineSpec.load(tmp_path / "pipeline.json") == spec
