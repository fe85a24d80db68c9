"""TensorRT FP16 plans from ONNX exports, where TensorRT and a GPU are present.

Plans are specific to a GPU model and TensorRT version, so they are built on
the serving GPU type: here when this machine has both, otherwise by the
plan-building Job on a GPU node (`k8s/`). Without them this step is skipped
with one line saying so.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

Shape = tuple[int, ...]


def build_plan(
    onnx_path: Path, plan_path: Path, shapes: Mapping[str, tuple[Shape, Shape, Shape]]
) -> bool:
    """Build `plan_path` with one optimization profile (min, opt, max shape per input).

    Returns False, after one line on stderr, when TensorRT or a GPU is missing.
    """
    try:
        import tensorrt as trt
    except ImportError:
        print(
            f"TensorRT: skipped {onnx_path.parent.parent.name} (the tensorrt package is not "
            "installed); build the plan on a GPU node with the plan-building Job",
            file=sys.stderr,
        )
        return False
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (RuntimeError, TypeError) as err:
        print(f"TensorRT: skipped (no usable GPU: {err})", file=sys.stderr)
        return False
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (smallest, typical, largest) in shapes.items():
        profile.set_shape(name, smallest, typical, largest)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {onnx_path}")
    Path(plan_path).write_bytes(bytes(plan))
    return True
