"""Triton glue shared by the Python-backend stages: a whole dynamic batch in one call.

Copied next to `model.py` into every Python stage's version folder, so it imports only numpy;
`triton_python_backend_utils` is imported when first needed (tests pass a fake one), and
ONNX Runtime by the stages that run a graph (`onnx_session`).

A stage (its `TritonPythonModel`) declares `name` (for error messages), `inputs` and `outputs`
(tensor names), `invalid` (the exception type, or a tuple of them, of a malformed request) and
`answer(group)`. `execute` reads each request's inputs (an absent optional input is None),
groups the requests whose inputs stack (the same inputs, shapes past the batch dimension and
dtypes: Triton batches equal shapes only, so a batch is normally one group) and hands each
group to `answer` in one call. `answer` returns, per request, its outputs in `outputs` order
or the exception that refuses it; if it raises, each request of the group is answered on its
own, so a malformed request fails alone. An `invalid` exception is an INVALID_ARG error with
its message; any other is INTERNAL, "<name> failed: <type>: <message>".
"""

from __future__ import annotations

import itertools
import json

import numpy as np


def intra_op_threads(args: dict) -> int:
    """The stage's `intra_op_thread_count` parameter (0, its framework's default, if absent),
    from Triton's `initialize` args."""
    parameters = json.loads(args["model_config"]).get("parameters", {})
    return int(parameters.get("intra_op_thread_count", {}).get("string_value", "0"))


def onnx_session(path, threads: int = 0):
    """An ONNX Runtime session on the CPU with `threads` intra-op threads (0: its default)
    whose idle threads sleep instead of spinning, as in the CPU onnxruntime backend: the
    stages of a server, and the steps of one process, share the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def execute(requests: list, stage, pb_utils=None) -> list:
    """One response per request (Triton's `execute`)."""
    if pb_utils is None:
        import triton_python_backend_utils as pb_utils
    batch = [read(pb_utils, request, stage.inputs) for request in requests]
    answers = [None] * len(batch)
    for members in groups(batch):
        for index, answer in zip(members, answer_group(stage, [batch[i] for i in members])):
            answers[index] = answer
    return [respond(pb_utils, stage, answer) for answer in answers]


def read(pb_utils, request, names) -> dict:
    """A request's inputs by name, as numpy arrays; None for an absent one."""
    tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in names}
    return {name: None if t is None else t.as_numpy() for name, t in tensors.items()}


def groups(batch: list[dict]) -> list[list[int]]:
    """Positions of the requests that stack, group by group. A request whose inputs disagree
    on their batch size (or have none) is a group of its own."""
    keyed: dict = {}
    for index, inputs in enumerate(batch):
        arrays = [a for a in inputs.values() if a is not None]
        if all(a.ndim and len(a) == len(arrays[0]) for a in arrays):
            key = tuple(None if a is None else (a.shape[1:], a.dtype) for a in inputs.values())
        else:
            key = index
        keyed.setdefault(key, []).append(index)
    return list(keyed.values())


def answer_group(stage, group: list[dict]) -> list:
    """`stage.answer(group)`; if it raises, each request alone (its exception its answer)."""
    try:
        return stage.answer(group)
    except Exception as err:  # noqa: BLE001 - a bad request must not fail the others
        if len(group) == 1:
            return [err]
        return [answer_group(stage, [inputs])[0] for inputs in group]


def respond(pb_utils, stage, answer):
    """The response for one request's outputs, or its error."""
    if not isinstance(answer, Exception):
        tensors = [pb_utils.Tensor(name, array) for name, array in zip(stage.outputs, answer)]
        return pb_utils.InferenceResponse(output_tensors=tensors)
    if isinstance(answer, stage.invalid):
        message, code = str(answer), pb_utils.TritonError.INVALID_ARG
    else:
        message = f"{stage.name} failed: {type(answer).__name__}: {answer}"
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def stack(group: list[dict]) -> dict:
    """Each input of a group's requests concatenated along the batch dimension (None when
    absent)."""
    return {
        name: None if group[0][name] is None else np.concatenate([i[name] for i in group])
        for name in group[0]
    }


def split(group: list[dict], *outputs: np.ndarray) -> list[tuple]:
    """Per request, its rows of each stacked output."""
    return split_rows(
        [len(next(a for a in inputs.values() if a is not None)) for inputs in group], *outputs
    )


def split_rows(sizes: list[int], *outputs: np.ndarray) -> list[tuple]:
    """Each output's rows cut into consecutive parts of `sizes` rows: per part, its rows of
    each output (views, sliced: cheaper than `np.split` on a batch's few requests)."""
    bounds = [0, *itertools.accumulate(sizes)]
    return [
        tuple(output[start:stop] for output in outputs)
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
