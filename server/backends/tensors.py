"""Pure tensor logic shared by our Python-based CPU backends.

Everything here works on the model config (as the JSON dict Triton hands to a
Python backend) and on NumPy arrays, so it is unit-tested without a server:
reading input/output specs, checking one request's inputs, grouping requests
whose shapes allow one batched run, applying `reshape`, and splitting the
batched outputs back per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_UINT16": np.dtype(np.uint16),
    "TYPE_UINT32": np.dtype(np.uint32),
    "TYPE_UINT64": np.dtype(np.uint64),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT16": np.dtype(np.int16),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
    "TYPE_STRING": np.dtype(np.object_),
}


class ConfigError(ValueError):
    """The model config cannot be served by this backend."""


class RequestError(ValueError):
    """One request's inputs do not match the model config."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the config declares it (dims exclude the batch dim)."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False

    @property
    def model_dims(self) -> tuple[int, ...]:
        """The dims the framework model sees (after `reshape`)."""
        return self.dims if self.reshape is None else self.reshape


@dataclass(frozen=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Mapping[str, str]
    default_model_filename: str

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def int_parameter(self, key: str, default: int) -> int:
        raw = self.parameters.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"model {self.name!r}: parameter {key!r} must be an integer, got {raw!r}"
            ) from None


def _tensor_spec(model: str, entry: Mapping) -> TensorSpec:
    name = entry.get("name", "")
    data_type = entry.get("data_type", "")
    if data_type not in TRITON_TO_NUMPY:
        raise ConfigError(f"model {model!r}: tensor {name!r} has unsupported type {data_type!r}")
    reshape = entry.get("reshape")
    return TensorSpec(
        name=name,
        dtype=TRITON_TO_NUMPY[data_type],
        dims=tuple(int(d) for d in entry.get("dims", [])),
        reshape=None if reshape is None else tuple(int(d) for d in reshape.get("shape", [])),
        optional=bool(entry.get("optional", False)),
    )


def parse_model_config(config: Mapping, default_filename: str) -> ModelSpec:
    """Build a ModelSpec from the JSON model config a Python backend receives."""
    name = config.get("name", "")
    inputs = tuple(_tensor_spec(name, e) for e in config.get("input", []))
    outputs = tuple(_tensor_spec(name, e) for e in config.get("output", []))
    if not inputs or not outputs:
        raise ConfigError(f"model {name!r}: the config must declare its inputs and outputs")
    parameters = {
        key: str(value.get("string_value", ""))
        for key, value in config.get("parameters", {}).items()
    }
    return ModelSpec(
        name=name,
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=inputs,
        outputs=outputs,
        parameters=parameters,
        default_model_filename=config.get("default_model_filename") or default_filename,
    )


def _shape_matches(shape: Sequence[int], dims: Sequence[int]) -> bool:
    return len(shape) == len(dims) and all(d == -1 or d == s for s, d in zip(shape, dims))


def check_request(spec: ModelSpec, arrays: Mapping[str, np.ndarray]) -> int:
    """Check one request's inputs against the config; return its batch size.

    Triton's core already rejects most mismatches before a backend sees them;
    this check keeps a bad request from reaching the framework with the others.
    """
    unknown = sorted(set(arrays) - {t.name for t in spec.inputs})
    if unknown:
        raise RequestError(f"unexpected input(s) {', '.join(unknown)} for model {spec.name!r}")
    batch_sizes = set()
    for tensor in spec.inputs:
        if tensor.name not in arrays:
            if tensor.optional:
                continue
            raise RequestError(f"missing input {tensor.name!r} for model {spec.name!r}")
        array = arrays[tensor.name]
        if array.dtype != tensor.dtype and not (
            tensor.dtype == np.object_ and array.dtype.kind in "OSU"
        ):
            raise RequestError(f"input {tensor.name!r}: expected {tensor.dtype}, got {array.dtype}")
        shape = array.shape[1:] if spec.batching else array.shape
        if spec.batching and array.ndim == 0:
            raise RequestError(f"input {tensor.name!r}: missing the batch dimension")
        if not _shape_matches(shape, tensor.model_dims):
            raise RequestError(
                f"input {tensor.name!r}: shape {list(array.shape)} does not match dims "
                f"{list(tensor.model_dims)}"
                + (" after the batch dimension" if spec.batching else "")
            )
        if spec.batching:
            batch_sizes.add(array.shape[0])
    if len(batch_sizes) > 1:
        raise RequestError(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    batch = batch_sizes.pop() if batch_sizes else 1
    if spec.batching and batch > spec.max_batch_size:
        raise RequestError(
            f"batch size {batch} exceeds max_batch_size {spec.max_batch_size} "
            f"of model {spec.name!r}"
        )
    return batch


def batch_key(arrays: Mapping[str, np.ndarray]) -> tuple:
    """Requests with equal keys can be concatenated along the batch dimension."""
    return tuple(sorted((name, a.shape[1:]) for name, a in arrays.items()))


def group_requests(keys: Sequence[tuple]) -> list[list[int]]:
    """Indexes of requests grouped by batch key, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def concatenate(spec: ModelSpec, requests: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """Join the requests' inputs into one batch, shaped as the model expects."""
    batch: dict[str, np.ndarray] = {}
    for tensor in spec.inputs:
        parts = [r[tensor.name] for r in requests if tensor.name in r]
        if not parts:
            continue
        joined = np.concatenate(parts, axis=0) if spec.batching else parts[0]
        if tensor.dtype == np.object_:
            joined = joined.astype(np.object_)
        batch[tensor.name] = joined
    return batch


def split_outputs(
    spec: ModelSpec, outputs: Mapping[str, np.ndarray], batch_sizes: Sequence[int]
) -> list[dict[str, np.ndarray]]:
    """Cut the batched outputs back into one dict per request, in config dims and types."""
    total = sum(batch_sizes)
    per_request: list[dict[str, np.ndarray]] = [{} for _ in batch_sizes]
    for tensor in spec.outputs:
        if tensor.name not in outputs:
            raise ConfigError(f"model {spec.name!r} did not produce output {tensor.name!r}")
        array = np.asarray(outputs[tensor.name])
        if spec.batching:
            if array.shape[0] != total:
                raise ConfigError(
                    f"output {tensor.name!r} has batch size {array.shape[0]}, expected {total}"
                )
            pieces = np.split(array, np.cumsum(batch_sizes)[:-1], axis=0)
        else:
            pieces = [array]
        for result, piece in zip(per_request, pieces):
            result[tensor.name] = piece.astype(tensor.dtype, copy=False)
    return per_request
