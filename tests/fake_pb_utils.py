"""A stand-in for Triton's `triton_python_backend_utils`, enough to run the Python stages'
`model.py` in a test process: requests are dicts of input arrays."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from builders.build import copy_runtime


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    INVALID_ARG = "INVALID_ARG"
    INTERNAL = "INTERNAL"

    def __init__(self, message: str, code: str = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self._outputs, self._error = output_tensors, error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: dict, name: str) -> Tensor | None:
    return None if request.get(name) is None else Tensor(name, request[name])


def outputs(response: InferenceResponse) -> dict[str, np.ndarray] | tuple[str, str]:
    """A response's outputs by name, or its error as (code, message)."""
    if response.has_error():
        return response.error().code(), response.error().message()
    return {tensor.name(): tensor.as_numpy() for tensor in response.output_tensors()}


def load_model(folder: Path, glue: str, *modules: str, monkeypatch):
    """Write a version folder the way the builder does (`copy_runtime`; data files are the
    caller's) and import its `model.py` (`import_model`)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy_runtime(folder, *modules, glue=glue)
    return import_model(folder, *modules, monkeypatch=monkeypatch)


def import_model(folder: Path, *modules: str, monkeypatch):
    """Import a version folder's `model.py` (which imports `modules` and `stage_glue` from
    that folder) with this module as `triton_python_backend_utils`."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", sys.modules[__name__])
    monkeypatch.setattr(sys, "path", list(sys.path))  # model.py prepends its folder
    for name in (*modules, "stage_glue"):  # imported afresh from this folder
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location(
        f"model_under_test_{folder.name}", folder / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
