"""The pipelines' tensor contract as the client sees it, and the check against the server.

The expected inputs and outputs come from the builders' specs
(`builders.names`), so the client and the models share one definition. Every
tensor has a leading batch dimension (the pipelines batch), and the client
sends one request per call: a batch of 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from builders import names
from builders.pipelines import parse_release_model
from builders.specs import TensorSpec
from clients.errors import InvalidArgumentError

PIPELINES = (names.SEARCH, names.RECOMMEND)


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.name} {self.datatype} {list(self.shape)}"


@dataclass(frozen=True)
class ModelMetadata:
    """What a server reports for a model: its loaded versions and its tensors."""

    name: str
    versions: tuple[int, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    optional: frozenset[str] = frozenset()  # inputs a model may leave out


def _tensors(entries: list[Mapping]) -> tuple[Tensor, ...]:
    return tuple(
        Tensor(e["name"], e["datatype"], tuple(int(d) for d in e["shape"])) for e in entries
    )


def parse_metadata(metadata: Mapping) -> ModelMetadata:
    """Model metadata as tritonclient returns it (gRPC `as_json=True` or HTTP)."""
    return ModelMetadata(
        name=metadata["name"],
        versions=tuple(sorted(int(v) for v in metadata.get("versions", []))),
        inputs=_tensors(metadata.get("inputs", [])),
        outputs=_tensors(metadata.get("outputs", [])),
    )


def expected_metadata(
    name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> ModelMetadata:
    """The metadata a server reports for a batching model with these tensors (STRING is
    BYTES on the wire)."""

    def tensors(specs):
        return tuple(
            Tensor(t.name, "BYTES" if t.data_type == "STRING" else t.data_type, (-1, *t.dims))
            for t in specs
        )

    optional = frozenset(t.name for t in inputs if t.optional)
    return ModelMetadata(name, (), tensors(inputs), tensors(outputs), optional)


EXPECTED = {
    names.SEARCH: expected_metadata(names.SEARCH, names.SEARCH_INPUTS, names.PIPELINE_OUTPUTS),
    names.RECOMMEND: expected_metadata(
        names.RECOMMEND, names.RECOMMEND_INPUTS, names.PIPELINE_OUTPUTS
    ),
}


def served_releases(kind: str, index_rows: list[Mapping]) -> tuple[int, ...]:
    """The releases of a pipeline a server has ready: its `<kind>_v<R>` ensembles in the
    repository index (rows of name, version, state)."""
    releases = set()
    for row in index_rows:
        parsed = parse_release_model(str(row.get("name", "")))
        if parsed and parsed[0] == kind and row.get("state") == "READY":
            releases.add(parsed[1])
    return tuple(sorted(releases))


def contract_problems(
    expected: ModelMetadata, served: ModelMetadata, versions: tuple[int, ...] = ()
) -> list[str]:
    """How `served` differs from `expected`, one line each; `versions` must be loaded."""
    problems = []
    for kind, want, got in (
        ("input", expected.inputs, served.inputs),
        ("output", expected.outputs, served.outputs),
    ):
        served_by_name = {t.name: t for t in got}
        for tensor in want:
            other = served_by_name.pop(tensor.name, None)
            if other is None:
                if tensor.name not in expected.optional:
                    problems.append(f"{kind} {tensor.name!r} is missing (expected {tensor})")
            elif other != tensor:
                problems.append(f"{kind} {tensor.name!r} is served as {other}, expected {tensor}")
        problems += [f"unexpected {kind} {t}" for t in served_by_name.values()]
    missing = sorted(set(versions) - set(served.versions))
    if missing:
        loaded = ", ".join(map(str, served.versions)) or "none"
        problems.append(f"version(s) {', '.join(map(str, missing))} not loaded (loaded: {loaded})")
    return problems


_LIMITS = {dtype: np.iinfo(dtype) for dtype in (np.int32, np.int64)}


def scalar_tensor(name: str, value, dtype) -> np.ndarray:
    """`value` as a [1, 1] integer tensor, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{name!r} must be an integer, got {value!r}")
    limits = _LIMITS[dtype]
    if not limits.min <= value <= limits.max:
        raise InvalidArgumentError(f"{name!r} is out of range for {limits.dtype}: {value}")
    return np.array([[value]], dtype=dtype)


def search_inputs(query: str | bytes, user_id: int | None, k: int) -> dict[str, np.ndarray]:
    """The `search` request for one query (a batch of 1)."""
    if not isinstance(query, str | bytes):
        raise InvalidArgumentError(f"'query' must be text, got {type(query).__name__}")
    raw = query.encode("utf-8") if isinstance(query, str) else query
    inputs = {"query": np.array([[raw]], dtype=np.object_), "k": scalar_tensor("k", k, np.int32)}
    if user_id is not None:
        inputs["user_id"] = scalar_tensor("user_id", user_id, np.int64)
    return inputs


def recommend_inputs(user_id: int, k: int) -> dict[str, np.ndarray]:
    """The `recommend` request for one user (a batch of 1)."""
    return {
        "user_id": scalar_tensor("user_id", user_id, np.int64),
        "k": scalar_tensor("k", k, np.int32),
    }
