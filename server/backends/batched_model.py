"""Triton glue for our Python-based CPU backends (imported inside the backend stub).

A subclass loads one framework model and runs one batch; this class does the
rest the way Triton's native backends do: one framework call for a whole
dynamic batch, outputs split back per request, and a per-request error
response for a bad request instead of failing the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from server.backends.tensors import (
    ConfigError,
    ModelSpec,
    RequestError,
    batch_key,
    check_request,
    concatenate,
    group_requests,
    parse_model_config,
    split_outputs,
)


class BatchedModel:
    """Base for `TritonPythonModel` classes of the CPU backends."""

    default_model_filename = ""

    def load(self, spec: ModelSpec, model_path: Path) -> None:
        """Load the framework model and check it against `spec`."""
        raise NotImplementedError

    def run(self, batch: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one batch (inputs in model shapes); return every configured output."""
        raise NotImplementedError

    def initialize(self, args: dict) -> None:
        self.spec = parse_model_config(
            json.loads(args["model_config"]), self.default_model_filename
        )
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_path = version_dir / self.spec.default_model_filename
        if not model_path.exists():
            raise ConfigError(f"model {self.spec.name!r}: {model_path} does not exist")
        self.load(self.spec, model_path)

    def execute(self, requests: list) -> list:
        arrays: list[dict[str, np.ndarray] | None] = []
        responses: list = [None] * len(requests)
        batch_sizes: list[int] = [0] * len(requests)
        for index, request in enumerate(requests):
            try:
                inputs = {t.name(): t.as_numpy() for t in request.inputs()}
                batch_sizes[index] = check_request(self.spec, inputs)
                arrays.append(inputs)
            except RequestError as err:
                responses[index] = _error_response(str(err))
                arrays.append(None)

        valid = [i for i, a in enumerate(arrays) if a is not None]
        groups = (
            group_requests([batch_key(arrays[i]) for i in valid])
            if self.spec.batching
            else [[k] for k in range(len(valid))]
        )
        for group in groups:
            indexes = [valid[k] for k in group]
            for index, outputs in self._run_group(indexes, arrays, batch_sizes).items():
                responses[index] = outputs
        return responses

    def _run_group(self, indexes: list[int], arrays: list, batch_sizes: list[int]) -> dict:
        """Run requests as one batch; if the framework fails, retry each alone.

        The retry isolates the request that made the framework fail (an id out
        of an embedding table's range, say): only that one gets the error.
        """
        try:
            batch = concatenate(self.spec, [arrays[i] for i in indexes])
            outputs = split_outputs(self.spec, self.run(batch), [batch_sizes[i] for i in indexes])
            return {i: _response(o) for i, o in zip(indexes, outputs)}
        except Exception as err:  # noqa: BLE001 - any framework error becomes a response
            if len(indexes) == 1:
                return {indexes[0]: _error_response(f"{type(err).__name__}: {err}")}
        results: dict = {}
        for index in indexes:
            results.update(self._run_group([index], arrays, batch_sizes))
        return results

    def finalize(self) -> None:
        pass


def thread_count(spec: ModelSpec, key: str) -> int:
    """A thread-count parameter; 0 means the framework's default."""
    count = spec.int_parameter(key, 0)
    if count < 0:
        raise ConfigError(f"model {spec.name!r}: parameter {key!r} must be >= 0")
    return count


def _response(outputs: Mapping[str, np.ndarray]):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]
    )


def _error_response(message: str):
    return pb_utils.InferenceResponse(
        output_tensors=[],
        error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG),
    )
