"""Python-based `onnxruntime` backend: serves `<version>/model.onnx` on the CPU.

Takes the native backend's name and model-config parameters
(`intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`), so the
same config serves here and on GPU nodes with NVIDIA's C++ backend.
"""

from pathlib import Path

import onnxruntime as ort

from server.backends.batched_model import BatchedModel, thread_count
from server.backends.tensors import ConfigError, ModelSpec

ORT_TO_NUMPY_KIND = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class TritonPythonModel(BatchedModel):
    default_model_filename = "model.onnx"

    def load(self, spec: ModelSpec, model_path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_count(spec, "intra_op_thread_count")
        options.inter_op_num_threads = thread_count(spec, "inter_op_thread_count")
        if spec.int_parameter("execution_mode", 0) == 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        # Idle intra-op threads spin by default; every stage is a process of its own, and on
        # a CPU they share, spinning threads take the cores the next stage needs.
        spinning = str(spec.int_parameter("allow_spinning", 0))
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        _check_tensors(spec.name, "input", spec.inputs, self.session.get_inputs())
        _check_tensors(spec.name, "output", spec.outputs, self.session.get_outputs())
        self.output_names = [t.name for t in spec.outputs]

    def run(self, batch):
        values = self.session.run(self.output_names, dict(batch))
        return dict(zip(self.output_names, values))


def _check_tensors(model, kind, configured, declared) -> None:
    """Every configured tensor must exist in the ONNX graph with the same type."""
    by_name = {t.name: t for t in declared}
    for tensor in configured:
        if tensor.name not in by_name:
            raise ConfigError(
                f"model {model!r}: {kind} {tensor.name!r} is not in the ONNX model "
                f"(it has {', '.join(sorted(by_name))})"
            )
        onnx_type = ORT_TO_NUMPY_KIND.get(by_name[tensor.name].type)
        if onnx_type != str(tensor.dtype):
            raise ConfigError(
                f"model {model!r}: {kind} {tensor.name!r} is {by_name[tensor.name].type} "
                f"in the ONNX model but {tensor.dtype} in the config"
            )
