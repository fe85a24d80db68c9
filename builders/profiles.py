"""Deployment profiles: the same models, configured for CPU or for GPU nodes.

`cpu` (the default) is what the local server runs. `gpu` is for the NGC image
on GPU nodes: the text encoder and the search ranker become TensorRT plans
(built from the version's `model.onnx` where TensorRT and a GPU exist, else by
the plan-building Job on a GPU node), the other ONNX models run on the GPU
through ONNX Runtime with its TensorRT accelerator in FP16, and the Python
models stay on the CPU.

Every build writes both: its profile's config as `config.pbtxt` and, where it
differs, the gpu one as `configs/gpu.pbtxt`, which Triton serves when started
with `--model-config-name=gpu` (the chart's `modelConfigName: gpu`).
"""

from __future__ import annotations

import dataclasses

from builders import names
from builders.specs import EnsembleSpec, ModelSpec

PROFILES = ("cpu", "gpu")
#: Models served as TensorRT plans in the gpu profile.
TENSORRT_MODELS = (names.TEXT_ENCODER, names.SEARCH_RANKER)


def adapt(
    spec: ModelSpec | EnsembleSpec, profile: str, *, trees: bool = False
) -> ModelSpec | EnsembleSpec:
    """The spec as `profile` serves it; ensembles and Python models are the same in all, and
    so are tree ensembles in ONNX (`trees`, `builders.gbdt`): ONNX Runtime has no GPU kernels
    for its tree operators and TensorRT does not parse them, so they run on the CPU."""
    if profile == "cpu" or isinstance(spec, EnsembleSpec) or spec.backend == "python" or trees:
        return spec
    if spec.name in TENSORRT_MODELS:
        return dataclasses.replace(
            spec, backend="tensorrt", instance_kind="KIND_GPU", parameters={}
        )
    if spec.backend == "onnxruntime":
        return dataclasses.replace(spec, instance_kind="KIND_GPU", gpu_accelerator_fp16=True)
    return dataclasses.replace(spec, instance_kind="KIND_GPU")
