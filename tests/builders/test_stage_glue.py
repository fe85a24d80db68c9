"""The glue every Python-backend stage shares, with a fake `triton_python_backend_utils`."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from builders.build import copy_runtime
from builders.runtime import stage_glue
from tests import fake_pb_utils
from tests.fake_pb_utils import outputs


class Refused(ValueError):
    pass


class Doubler:
    """A stage: y = 2 * x * w (`w` optional, 1 when absent), one call for a whole group.
    Negative x fails the call (so each request is retried alone), x above 100 is an
    unexpected error, and a request whose x are all 0 is refused in the answers."""

    name = "doubling"
    inputs = ("x", "w")
    outputs = ("y",)
    invalid = Refused

    def __init__(self) -> None:
        self.calls: list[int] = []

    def answer(self, group: list[dict]) -> list:
        self.calls.append(len(group))
        arrays = stage_glue.stack(group)
        if (arrays["x"] < 0).any():
            raise Refused("x must not be negative")
        if (arrays["x"] > 100).any():
            raise RuntimeError("too large")
        weights = 1 if arrays["w"] is None else arrays["w"]
        answers = stage_glue.split(group, 2 * arrays["x"] * weights)
        return [
            Refused("nothing to double") if not i["x"].any() else a for i, a in zip(group, answers)
        ]


def run(requests, stage=None):
    stage = stage or Doubler()
    return [outputs(r) for r in stage_glue.execute(requests, stage, fake_pb_utils)], stage


def x(*rows):
    return np.array(rows, dtype=np.float32)


def test_a_batch_is_one_call_and_each_request_gets_its_rows():
    requests = [{"x": x([1, 2])}, {"x": x([3, 4], [5, 6])}, {"x": x([7, 8])}]
    answers, stage = run(requests)
    assert stage.calls == [3]
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], 2 * request["x"])
        assert answer["y"].dtype == np.float32


def test_requests_of_other_shapes_or_inputs_are_separate_calls_in_order():
    requests = [
        {"x": x([1, 2])},
        {"x": x([1, 2, 3])},
        {"x": x([3, 4]), "w": x([10, 10])},
        {"x": x([5, 6])},
    ]
    answers, stage = run(requests)
    assert sorted(stage.calls) == [1, 1, 2]
    expected = [[[2, 4]], [[2, 4, 6]], [[60, 80]], [[10, 12]]]
    assert [a["y"].tolist() for a in answers] == expected


def test_absent_optional_input_is_none():
    group = [stage_glue.read(fake_pb_utils, {"x": x([1])}, ("x", "w"))]
    assert group[0]["w"] is None and stage_glue.stack(group)["w"] is None


def test_a_request_whose_inputs_disagree_on_the_batch_size_is_alone():
    requests = [{"x": x([1], [2]), "w": x([1])}, {"x": x([3]), "w": x([1])}]
    assert stage_glue.groups([stage_glue.read(fake_pb_utils, r, ("x", "w")) for r in requests]) == [
        [0],
        [1],
    ]


def test_a_malformed_request_fails_alone_and_the_rest_are_answered():
    requests = [{"x": x([1, 2])}, {"x": x([-1, 2])}, {"x": x([3, 4])}]
    answers, stage = run(requests)
    assert stage.calls == [3, 1, 1, 1]  # the batch, then each request alone
    assert answers[1] == ("INVALID_ARG", "x must not be negative")
    assert answers[0]["y"].tolist() == [[2, 4]] and answers[2]["y"].tolist() == [[6, 8]]


def test_a_request_the_stage_refuses_in_its_answers_needs_no_retry():
    answers, stage = run([{"x": x([1, 2])}, {"x": x([0, 0])}])
    assert stage.calls == [2]
    assert answers[1] == ("INVALID_ARG", "nothing to double")
    assert answers[0]["y"].tolist() == [[2, 4]]


def test_an_unexpected_error_is_internal_and_names_the_stage():
    answers, _ = run([{"x": x([1, 2])}, {"x": x([500, 2])}])
    assert answers[1] == ("INTERNAL", "doubling failed: RuntimeError: too large")
    assert answers[0]["y"].tolist() == [[2, 4]]


def test_pb_utils_is_imported_when_first_needed(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils)
    (response,) = stage_glue.execute([{"x": x([1])}], Doubler())
    assert outputs(response)["y"].tolist() == [[2]]


def test_the_builder_copies_the_glue_into_every_stage(tmp_path, monkeypatch):
    model = fake_pb_utils.load_model(tmp_path / "1", "topk_model", "topk", monkeypatch=monkeypatch)
    assert {"model.py", "topk.py", "stage_glue.py"} <= {p.name for p in (tmp_path / "1").iterdir()}
    assert model.stage_glue.__file__ == str(tmp_path / "1" / "stage_glue.py")


def test_the_builder_writes_the_bytecode_of_what_it_copies(tmp_path):
    """So a backend stub that imports them writes nothing into the repository."""
    copy_runtime(tmp_path, "topk", glue="topk_model")
    for name in ("model", "topk", "stage_glue"):
        assert Path(importlib.util.cache_from_source(str(tmp_path / f"{name}.py"))).is_file()


def test_an_empty_batch_gets_no_responses():
    assert run([])[0] == []


def test_intra_op_threads_reads_the_config_parameter_or_zero():
    config = {"parameters": {"intra_op_thread_count": {"string_value": "2"}}}
    assert stage_glue.intra_op_threads({"model_config": json.dumps(config)}) == 2
    assert stage_glue.intra_op_threads({"model_config": json.dumps({"name": "x"})}) == 0


def test_split_rows_cuts_each_output_into_consecutive_parts():
    first, second = np.arange(6).reshape(6, 1), np.arange(6) * 10
    parts = stage_glue.split_rows([1, 3, 2], first, second)
    assert [[o.tolist() for o in part] for part in parts] == [
        [[[0]], [0]],
        [[[1], [2], [3]], [10, 20, 30]],
        [[[4], [5]], [40, 50]],
    ]
    assert stage_glue.split_rows([], first) == []
