"""Sweep files: the YAML format, validated into a `SweepSpec`.

```yaml
model: search                 # the model perf_analyzer drives: a stage or a pipeline
repository: model_repository  # relative to the repository root unless absolute
search: smart                 # smart (coordinate descent) or brute (every config)
slo: {p99_ms: 250}
objective: throughput
load: {concurrency: [1, 2, 4, 8]}      # or {request_rate: [20, 40, 80]}
space:                        # per model, or a role of the pipeline's release: `retrieval` is
  retrieval:                  # its query encoder and exact index in one model (with an ANN
    max_queue_delay_microseconds: [0, 2000]   # index: `encoder`, `index`); tunable -> values
    instance_count: [1, 2]
measurement: {interval_ms: 2000, stability_percentage: 100, max_trials: 8}
input_data: {samples: 256, seed: 0}     # drawn from the dataset; `random` for random tensors
capacity: {target_qps: 500, headroom: 0.3, price_per_replica_hour: 1.2}
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from builders.repository import model_versions
from builders.runtime.tokenization import check_buckets, parse_buckets
from builders.specs import parse_pbtxt
from perf import ROOT, inputs
from perf.tuning.analyzer import LOAD_MODES

TUNABLES = (
    "max_batch_size",
    "preferred_batch_size",
    "max_queue_delay_microseconds",
    # the bounded queue (`default_queue_policy`): its size and its timeout
    "max_queue_size",
    "default_timeout_microseconds",
    "instance_count",
    "intra_op_thread_count",
    "inter_op_thread_count",
    "length_buckets",
)
TOP_KEYS = {
    "name",
    "model",
    "repository",
    "search",
    "slo",
    "objective",
    "load",
    "space",
    "measurement",
    "input_data",
    "shapes",
    "capacity",
    "max_passes",
    "confirm_rounds",
}
SEARCH_MODES = ("smart", "brute")


class SweepFileError(ValueError):
    """A sweep file that cannot be run; the message says which field and why."""


@dataclass(frozen=True)
class Measurement:
    interval_ms: int = 2000
    stability_percentage: int = 100
    max_trials: int = 8


@dataclass(frozen=True)
class Capacity:
    target_qps: float
    headroom: float = 0.3
    price_per_replica_hour: float | None = None

    def __post_init__(self) -> None:
        if self.target_qps <= 0 or not 0 <= self.headroom < 10:
            raise SweepFileError("capacity: target_qps must be > 0 and headroom in [0, 10)")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to measure, over which space, against which SLO."""

    name: str
    model: str
    repository: Path
    slo_p99_ms: float
    load_mode: str
    loads: tuple[float, ...]
    space: dict[str, dict[str, list]]
    search: str = "smart"
    composing_models: tuple[str, ...] = ()
    measurement: Measurement = field(default_factory=Measurement)
    input_samples: int | None = 256
    input_seed: int = 0
    shapes: tuple[str, ...] = ()
    capacity: Capacity | None = None
    max_passes: int = 2
    #: Rounds that re-measure the winner against the original configs (as they were),
    #: interleaved; the winner is kept only if it beats them in every round.
    confirm_rounds: int = 0

    @property
    def dimensions(self) -> dict[str, list]:
        """The space flattened to `model.tunable` -> values."""
        return {
            f"{model}.{tunable}": values
            for model, tunables in self.space.items()
            for tunable, values in tunables.items()
        }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SweepFileError(message)


def _positive_list(value: object, where: str, integer: bool) -> list:
    _require(isinstance(value, list) and value, f"{where} must be a non-empty list")
    for item in value:
        ok = isinstance(item, int | float) and not isinstance(item, bool) and item > 0
        ok = ok and (not integer or isinstance(item, int))
        _require(ok, f"{where}: {item!r} is not a positive {'integer' if integer else 'number'}")
    return value


def _tunable_values(model: str, tunable: str, values: object, config: dict) -> list:
    where = f"space.{model}.{tunable}"
    _require(isinstance(values, list) and values, f"{where} must be a non-empty list of values")
    for value in values:
        if tunable == "length_buckets":
            _check_length_buckets(where, value, config)
        elif tunable == "preferred_batch_size":
            ok = isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            )
            _require(ok, f"{where}: {value!r} must be a list of positive integers ([] for none)")
        elif tunable == "max_queue_delay_microseconds":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            _require(ok, f"{where}: {value!r} must be an integer >= 0")
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            _require(ok, f"{where}: {value!r} must be a positive integer")
    return values


def _check_length_buckets(where: str, value: object, config: dict) -> None:
    """A tokenizer's padded widths as its `length_buckets` parameter says them: "8,16"."""
    max_length = config.get("parameters", {}).get("max_length", {}).get("string_value")
    _require(max_length is not None, f"{where}: only the query tokenizer has length buckets")
    _require(isinstance(value, str), f"{where}: {value!r} must be a text like '8,16' ('': none)")
    try:
        check_buckets(parse_buckets(value), int(max_length))
    except ValueError as err:
        raise SweepFileError(f"{where}: {err}") from None


def pipeline_roles(repository: Path, model: str) -> dict[str, str]:
    """Role -> stage model of a pipeline's latest version (empty for a plain model)."""
    versions = model_versions(repository, model)
    pinned = repository / model / str(versions[-1]) / "pipeline.json" if versions else None
    if pinned is None or not pinned.is_file():
        return {}
    stages = json.loads(pinned.read_text())["stages"]
    return {role: stage["model"] for role, stage in stages.items()}


def pipeline_stages(repository: Path, model: str) -> tuple[str, ...]:
    """The stage models a pipeline's latest version pins (empty for a plain model)."""
    return tuple(sorted(set(pipeline_roles(repository, model).values())))


def model_config(repository: Path, model: str) -> dict:
    path = repository / model / "config.pbtxt"
    _require(path.is_file(), f"unknown model {model!r}: no {path}")
    return parse_pbtxt(path.read_text())


def parse(document: object, source: str = "sweep file", base: Path = ROOT) -> SweepSpec:
    """Validate a loaded YAML document into a SweepSpec."""
    _require(isinstance(document, dict), f"{source}: the top level must be a mapping")
    unknown = sorted(set(document) - TOP_KEYS)
    _require(not unknown, f"{source}: unknown keys {unknown}; valid: {sorted(TOP_KEYS)}")
    for key in ("model", "slo", "load", "space"):
        _require(key in document, f"{source}: missing required key {key!r}")

    repository = Path(document.get("repository", "model_repository"))
    repository = repository if repository.is_absolute() else base / repository
    _require(repository.is_dir(), f"repository {repository} does not exist (run `make models`)")
    model = document["model"]
    _require(isinstance(model, str), "model must be a model name")
    target_config = model_config(repository, model)
    roles = pipeline_roles(repository, model)
    stages = pipeline_stages(repository, model)

    search = document.get("search", "smart")
    _require(search in SEARCH_MODES, f"search must be one of {SEARCH_MODES}, got {search!r}")
    _require(document.get("objective", "throughput") == "throughput", "objective: throughput")

    slo = document["slo"]
    _require(isinstance(slo, dict) and "p99_ms" in slo, "slo must be a mapping with p99_ms")
    slo_ms = slo["p99_ms"]
    ok = isinstance(slo_ms, int | float) and not isinstance(slo_ms, bool) and slo_ms > 0
    _require(ok, f"slo.p99_ms must be a positive number, got {slo_ms!r}")

    load = document["load"]
    _require(
        isinstance(load, dict) and len(load) == 1 and next(iter(load)) in LOAD_MODES,
        "load must be {concurrency: [...]} or {request_rate: [...]}",
    )
    load_mode, loads = next(iter(load.items()))
    loads = _positive_list(loads, f"load.{load_mode}", integer=load_mode == "concurrency")

    space = document["space"]
    _require(isinstance(space, dict) and space, "space must map model names to tunables")
    checked: dict[str, dict[str, list]] = {}
    pipeline_batch = target_config.get("max_batch_size", 0) if stages else 0
    for key, tunables in space.items():
        name = key if key == model or key in stages else roles.get(key, key)
        _require(
            name == model or name in stages,
            f"space: {key!r} is neither {model!r} nor one of its stages {list(stages)} or roles "
            f"{list(roles)}",
        )
        _require(
            model_config(repository, name).get("platform") != "ensemble",
            f"space.{name}: {name!r} is an ensemble, which has no batcher or instances of "
            "its own; tune its stages",
        )
        _require(isinstance(tunables, dict) and tunables, f"space.{name} must map tunables")
        bad = sorted(set(tunables) - set(TUNABLES))
        _require(not bad, f"space.{name}: unknown tunables {bad}; valid: {list(TUNABLES)}")
        config = model_config(repository, name)
        checked[name] = {t: _tunable_values(name, t, v, config) for t, v in tunables.items()}
        if name != model and "max_batch_size" in tunables:
            small = [v for v in tunables["max_batch_size"] if v < pipeline_batch]
            _require(
                not small,
                f"space.{name}.max_batch_size {small}: a stage must accept the whole batch "
                f"{model} sends it (max_batch_size >= {pipeline_batch})",
            )

    measurement = document.get("measurement") or {}
    _require(isinstance(measurement, dict), "measurement must be a mapping")
    try:
        measure = Measurement(**measurement)
    except TypeError as err:
        raise SweepFileError(f"measurement: {err}") from None

    data = document.get("input_data", {})
    if data == "random":
        samples, seed = None, 0
    else:
        _require(isinstance(data, dict), "input_data must be a mapping or `random`")
        samples, seed = int(data.get("samples", 256)), int(data.get("seed", 0))
        _require(
            model in inputs.SUPPORTED,
            f"no realistic input data for {model!r}; set `input_data: random` (and `shapes`)",
        )

    capacity = document.get("capacity")
    if capacity is not None:
        _require(isinstance(capacity, dict) and "target_qps" in capacity, "capacity.target_qps")
        try:
            capacity = Capacity(**capacity)
        except TypeError as err:
            raise SweepFileError(f"capacity: {err}") from None

    return SweepSpec(
        name=str(document.get("name", Path(source).stem)),
        model=model,
        repository=repository.resolve(),
        slo_p99_ms=float(slo_ms),
        load_mode=load_mode,
        loads=tuple(loads),
        space=checked,
        search=search,
        composing_models=stages,
        measurement=measure,
        input_samples=samples,
        input_seed=seed,
        shapes=tuple(document.get("shapes", ())),
        capacity=capacity,
        max_passes=int(document.get("max_passes", 2)),
        confirm_rounds=_confirm_rounds(document.get("confirm_rounds", 0)),
    )


def _confirm_rounds(value: object) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    _require(ok, f"confirm_rounds must be a whole number >= 0, got {value!r}")
    return int(value)


def load(path: str | Path, repository: Path | None = None) -> SweepSpec:
    """Read and validate a sweep file; `repository` overrides the file's."""
    path = Path(path)
    _require(path.is_file(), f"sweep file {path} does not exist")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepFileError(f"{path}: not valid YAML: {err}") from None
    if repository is not None and isinstance(document, dict):
        document = {**document, "repository": str(Path(repository).resolve())}
    return parse(document, str(path))
