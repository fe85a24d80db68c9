"""Typed model-config specs, rendered to `config.pbtxt` through Triton's own proto.

A `ModelSpec` validates itself on construction; `to_config()` gives the plain
dict form, `to_pbtxt()` passes it through
`tritonclient.grpc.model_config_pb2.ModelConfig` (so Triton's schema checks
every field) and writes protobuf text. `parse_pbtxt` reads one back.

Every model gets a `model_warmup` sample derived from its inputs: Triton runs it on
each instance before the model is ready (at load, reload and hot swap), so the first
real requests do not pay for the first run. Variable dimensions take `WARMUP_SIZE`;
an input is zeros unless its `TensorSpec.warmup_value` says otherwise, and such
values travel as files in `<model>/warmup/` (`ModelSpec.warmup_files()`), where
Triton reads them. A failed warm-up request fails the load, so the values must be
valid requests.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

DATA_TYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "STRING",
)
# backend name -> the `platform` Triton reports for it (None: the backend name alone)
BACKENDS: Mapping[str, str | None] = {
    "onnxruntime": "onnxruntime_onnx",
    "tensorflow": "tensorflow_savedmodel",
    "tensorrt": "tensorrt_plan",
    "python": None,
}
DEFAULT_FILENAMES = {
    "onnxruntime": "model.onnx",
    "tensorflow": "model.savedmodel",
    "tensorrt": "model.plan",
    "python": "model.py",
}
NUMPY_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
#: The length every variable (-1) dimension takes in a warm-up request.
WARMUP_SIZE = 1
#: Folder of a model (next to its config.pbtxt) that holds the warm-up input files.
WARMUP_FOLDER = "warmup"


class SpecError(ValueError):
    """A spec that Triton would reject or that makes no sense."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output; `dims` exclude the batch dimension, -1 is variable."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False
    #: The value of every element of a warm-up request (None: zeros). A STRING input needs
    #: one: Triton's zero data for strings is the empty string.
    warmup_value: str | int | float | None = None

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SpecError(f"tensor name {self.name!r} is not a valid Triton name")
        if self.data_type not in DATA_TYPES:
            raise SpecError(
                f"tensor {self.name!r}: data_type must be one of {', '.join(DATA_TYPES)}"
            )
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise SpecError(f"tensor {self.name!r}: dims must be positive or -1, got {self.dims}")
        if self.warmup_value is not None and (
            isinstance(self.warmup_value, str) != (self.data_type == "STRING")
        ):
            raise SpecError(
                f"tensor {self.name!r}: the warmup_value of a STRING tensor is a text, "
                "of any other tensor a number"
            )

    @property
    def warmup_dims(self) -> list[int]:
        return [WARMUP_SIZE if d == -1 else d for d in self.dims]

    def warmup_bytes(self) -> bytes:
        """The warm-up value as Triton's raw input data: row-major elements, a STRING
        element as its 4-byte little-endian length and its UTF-8 bytes."""
        count = int(np.prod(self.warmup_dims))
        if self.data_type == "STRING":
            text = str(self.warmup_value).encode()
            return (struct.pack("<I", len(text)) + text) * count
        return np.full(count, self.warmup_value, NUMPY_TYPES[self.data_type]).tobytes()

    def warmup_config(self) -> dict:
        config: dict = {"data_type": f"TYPE_{self.data_type}", "dims": self.warmup_dims}
        if self.warmup_value is None:
            config["zero_data"] = True
        else:
            config["input_data_file"] = self.name
        return config

    def to_config(self) -> dict:
        config = {"name": self.name, "data_type": f"TYPE_{self.data_type}", "dims": list(self.dims)}
        if self.optional:
            config["optional"] = True
        return config


#: Of a request's latency SLO, the most it may wait in one stage's queue; the rest is for
#: computing it and the stages after it.
QUEUE_SHARE = 0.5
#: Of the SLO, the longest a stage may take to compute one full batch and still meet it
#: under load (a request waits for one batch, then computes in the next).
BATCH_SHARE = 0.25


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's `default_queue_policy` of a dynamic batcher: a bounded queue that rejects.

    A request that finds `max_queue_size` requests waiting is rejected at once; one that
    has waited `timeout_microseconds` is rejected when the batcher reaches it, never run
    late (`timeout_action: REJECT`). A request's own timeout may shorten the wait, never
    lengthen it (`allow_timeout_override`). Rejections are UNAVAILABLE (HTTP 503).

    Builds leave it out unless asked (`BuildOptions.slo_ms`). Any queue policy turns off
    Triton's payload prefetching, and then Triton 2.51's dynamic batcher can miss the
    wake-up of an instance that finished its batch: the batcher sleeps up to 500 ms, until
    another request arrives, and every request queued meanwhile waits (or times out). Under
    closed-loop or bursty load that is most requests of a burst.
    """

    max_queue_size: int
    timeout_microseconds: int
    allow_timeout_override: bool = True

    def __post_init__(self) -> None:
        if self.max_queue_size < 1 or self.timeout_microseconds < 1:
            raise SpecError("a bounded queue needs max_queue_size and a timeout >= 1")

    def to_config(self) -> dict:
        return {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": self.timeout_microseconds,
            "allow_timeout_override": self.allow_timeout_override,
            "max_queue_size": self.max_queue_size,
        }


def queue_policy(slo_ms: float, max_batch_size: int) -> QueuePolicy:
    """The queue bounds of a stage for a p99 latency SLO: a request waits at most
    `QUEUE_SHARE` of the SLO, and the queue holds the requests a stage computing full
    batches within `BATCH_SHARE` of the SLO drains in that time (`max_batch_size` x
    QUEUE_SHARE / BATCH_SHARE); a request beyond them could not meet the SLO anyway."""
    if slo_ms <= 0 or max_batch_size < 1:
        raise SpecError("a queue policy needs an SLO > 0 ms and max_batch_size >= 1")
    timeout_us = max(1, round(slo_ms * 1000 * QUEUE_SHARE))
    return QueuePolicy(round(max_batch_size * QUEUE_SHARE / BATCH_SHARE), timeout_us)


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_microseconds: int = 1000
    preferred_batch_size: tuple[int, ...] = ()
    #: None: Triton's default, an unbounded queue without a timeout.
    queue_policy: QueuePolicy | None = None

    def __post_init__(self) -> None:
        if self.max_queue_delay_microseconds < 0:
            raise SpecError("max_queue_delay_microseconds must be >= 0")
        if any(size < 1 for size in self.preferred_batch_size):
            raise SpecError("preferred_batch_size entries must be >= 1")

    def to_config(self) -> dict:
        config: dict = {"max_queue_delay_microseconds": self.max_queue_delay_microseconds}
        if self.preferred_batch_size:
            config["preferred_batch_size"] = list(self.preferred_batch_size)
        if self.queue_policy is not None:
            config["default_queue_policy"] = self.queue_policy.to_config()
        return config


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions Triton serves: the latest `latest` ones, or `specific` ones."""

    latest: int | None = 1
    specific: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if (self.latest is None) == (not self.specific):
            raise SpecError("a version policy is either `latest` or `specific`, not both")
        if self.latest is not None and self.latest < 1:
            raise SpecError("version_policy latest must be >= 1")
        if any(v < 1 for v in self.specific):
            raise SpecError("model versions are >= 1")

    def to_config(self) -> dict:
        if self.specific:
            return {"specific": {"versions": list(self.specific)}}
        return {"latest": {"num_versions": self.latest}}


@dataclass(frozen=True)
class ModelSpec:
    """One Triton model: everything its config.pbtxt says."""

    name: str
    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    parameters: Mapping[str, str] = field(default_factory=dict)
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    gpu_accelerator_fp16: bool = False
    #: Answer repeated requests from Triton's response cache (when the server has one).
    response_cache: bool = False

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SpecError(f"model name {self.name!r} is not a valid Triton name")
        if self.backend not in BACKENDS:
            raise SpecError(
                f"model {self.name!r}: backend must be one of {', '.join(BACKENDS)}, "
                f"got {self.backend!r}"
            )
        if not self.inputs or not self.outputs:
            raise SpecError(f"model {self.name!r} needs inputs and outputs")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise SpecError(f"model {self.name!r}: tensor names must be unique")
        if self.max_batch_size < 0:
            raise SpecError(f"model {self.name!r}: max_batch_size must be >= 0")
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0:
                raise SpecError(f"model {self.name!r}: dynamic batching needs max_batch_size > 0")
            too_big = [
                s for s in self.dynamic_batching.preferred_batch_size if s > self.max_batch_size
            ]
            if too_big:
                raise SpecError(
                    f"model {self.name!r}: preferred_batch_size {too_big} exceeds "
                    f"max_batch_size {self.max_batch_size}"
                )
        if self.instance_count < 1:
            raise SpecError(f"model {self.name!r}: instance_count must be >= 1")
        if self.instance_kind not in ("KIND_CPU", "KIND_GPU"):
            raise SpecError(f"model {self.name!r}: instance_kind must be KIND_CPU or KIND_GPU")
        if self.gpu_accelerator_fp16 and self.backend != "onnxruntime":
            raise SpecError(f"model {self.name!r}: the TensorRT accelerator is for ONNX models")
        textless = [t.name for t in self.inputs if t.data_type == "STRING" and not t.warmup_value]
        if textless:
            raise SpecError(
                f"model {self.name!r}: STRING input(s) {', '.join(textless)} need a warmup_value "
                "(a warm-up request with an empty text would be refused and fail the load)"
            )

    @property
    def default_model_filename(self) -> str:
        return DEFAULT_FILENAMES[self.backend]

    def warmup_files(self) -> dict[str, bytes]:
        """The files `<model>/warmup/` holds for the warm-up sample, by file name."""
        return {t.name: t.warmup_bytes() for t in self.inputs if t.warmup_value is not None}

    def to_config(self) -> dict:
        config: dict = {"name": self.name, "backend": self.backend}
        if BACKENDS[self.backend]:
            config["platform"] = BACKENDS[self.backend]
        config.update(
            max_batch_size=self.max_batch_size,
            input=[t.to_config() for t in self.inputs],
            output=[t.to_config() for t in self.outputs],
            instance_group=[{"count": self.instance_count, "kind": self.instance_kind}],
            version_policy=self.version_policy.to_config(),
        )
        if self.dynamic_batching is not None:
            config["dynamic_batching"] = self.dynamic_batching.to_config()
        if self.parameters:
            config["parameters"] = {
                key: {"string_value": str(value)} for key, value in sorted(self.parameters.items())
            }
        if self.response_cache:
            config["response_cache"] = {"enable": True}
        config["model_warmup"] = [
            {
                "name": "warmup",
                "batch_size": 1,
                "inputs": {t.name: t.warmup_config() for t in self.inputs},
            }
        ]
        if self.gpu_accelerator_fp16:
            config["optimization"] = {
                "execution_accelerators": {
                    "gpu_execution_accelerator": [
                        {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}
                    ]
                }
            }
        return config

    def to_pbtxt(self) -> str:
        return render_pbtxt(self.to_config())


def render_pbtxt(config: Mapping) -> str:
    """A config dict as config.pbtxt text, checked against Triton's ModelConfig proto."""
    try:
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as err:
        raise SpecError(f"not a valid Triton model config: {err}") from None
    return text_format.MessageToString(message)


def parse_pbtxt(text: str) -> dict:
    """config.pbtxt text back to the dict form (field names as in the proto)."""
    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: a composing model at one version and its tensor maps.

    `input_map` maps the model's input names to ensemble tensors, `output_map` the
    model's output names to ensemble tensors (Triton's `ensemble_scheduling.step`).
    """

    model: str
    version: int
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]

    def __post_init__(self) -> None:
        if not NAME.match(self.model):
            raise SpecError(f"model name {self.model!r} is not a valid Triton name")
        if self.version < 1:
            raise SpecError(f"step {self.model!r}: pin a version >= 1, got {self.version}")
        if not self.input_map or not self.output_map:
            raise SpecError(f"step {self.model!r} needs inputs and outputs")

    def to_config(self) -> dict:
        return {
            "model_name": self.model,
            "model_version": self.version,
            "input_map": dict(self.input_map),
            "output_map": dict(self.output_map),
        }


@dataclass(frozen=True)
class EnsembleSpec:
    """A Triton ensemble (`platform: "ensemble"`): steps run by Triton's C++ scheduler.

    Checked on construction the way Triton checks it at load time: every step reads
    ensemble inputs or earlier steps' outputs, every ensemble tensor is written once,
    and every ensemble output is written by some step.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[EnsembleStep, ...]
    max_batch_size: int = 0
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SpecError(f"model name {self.name!r} is not a valid Triton name")
        if not self.steps:
            raise SpecError(f"ensemble {self.name!r} needs at least one step")
        if self.max_batch_size < 0:
            raise SpecError(f"ensemble {self.name!r}: max_batch_size must be >= 0")
        available = {t.name for t in self.inputs}
        for step in self.steps:
            missing = sorted(set(step.input_map.values()) - available)
            if missing:
                raise SpecError(
                    f"ensemble {self.name!r}: step {step.model!r} reads {', '.join(missing)}, "
                    "which no ensemble input or earlier step provides"
                )
            written = sorted(set(step.output_map.values()) & available)
            if written:
                raise SpecError(
                    f"ensemble {self.name!r}: step {step.model!r} writes {', '.join(written)} "
                    "again; each ensemble tensor is written once"
                )
            available |= set(step.output_map.values())
        unwritten = sorted({t.name for t in self.outputs} - available)
        if unwritten:
            raise SpecError(
                f"ensemble {self.name!r}: no step writes output(s) {', '.join(unwritten)}"
            )
        read = {t.name for t in self.outputs}.union(
            *(step.input_map.values() for step in self.steps)
        )
        unused = sorted(available - read)
        if unused:
            raise SpecError(
                f"ensemble {self.name!r}: tensor(s) {', '.join(unused)} are never read "
                "(Triton refuses unused ensemble inputs and step outputs)"
            )

    def to_config(self) -> dict:
        config: dict = {
            "name": self.name,
            "platform": "ensemble",
            "max_batch_size": self.max_batch_size,
            "input": [t.to_config() for t in self.inputs],
            "output": [t.to_config() for t in self.outputs],
            "ensemble_scheduling": {"step": [step.to_config() for step in self.steps]},
            "version_policy": self.version_policy.to_config(),
        }
        if self.parameters:
            config["parameters"] = {
                key: {"string_value": str(value)} for key, value in sorted(self.parameters.items())
            }
        return config

    def to_pbtxt(self) -> str:
        return render_pbtxt(self.to_config())


def with_slo(spec: ModelSpec | EnsembleSpec, slo_ms: float | None) -> ModelSpec | EnsembleSpec:
    """`spec` with the queue bounds of `slo_ms` on its dynamic batcher (`queue_policy`).
    Without an SLO (None: the builds' default, `QueuePolicy` says why), a model without a
    batcher, or an ensemble (its steps queue, it does not), it stays as it is."""
    if slo_ms is None or isinstance(spec, EnsembleSpec) or spec.dynamic_batching is None:
        return spec
    policy = queue_policy(slo_ms, spec.max_batch_size)
    return replace(spec, dynamic_batching=replace(spec.dynamic_batching, queue_policy=policy))
