"""Python-based `tensorflow` backend: serves `<version>/model.savedmodel` on the CPU.

Calls the SavedModel signature named by the `TF_SIGNATURE_DEF` parameter
(default `serving_default`), as NVIDIA's TensorFlow backend does. Config input
names are the signature's input names; outputs are its output keys (Keras 3
`model.export` names an unnamed output `output_0`). Thread counts come from the
`intra_op_thread_count` / `inter_op_thread_count` parameters.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from server.backends.batched_model import BatchedModel, thread_count
from server.backends.tensors import ConfigError, ModelSpec


class TritonPythonModel(BatchedModel):
    default_model_filename = "model.savedmodel"

    def load(self, spec: ModelSpec, model_path: Path) -> None:
        tf.config.threading.set_intra_op_parallelism_threads(
            thread_count(spec, "intra_op_thread_count")
        )
        tf.config.threading.set_inter_op_parallelism_threads(
            thread_count(spec, "inter_op_thread_count")
        )
        signature_name = spec.parameters.get("TF_SIGNATURE_DEF") or "serving_default"
        self.saved_model = tf.saved_model.load(str(model_path))
        if signature_name not in self.saved_model.signatures:
            raise ConfigError(
                f"model {spec.name!r}: SavedModel has no signature {signature_name!r} "
                f"(it has {', '.join(self.saved_model.signatures)})"
            )
        self.signature = self.saved_model.signatures[signature_name]
        _, declared_inputs = self.signature.structured_input_signature
        declared_outputs = self.signature.structured_outputs
        for kind, configured, declared in (
            ("input", spec.inputs, declared_inputs),
            ("output", spec.outputs, declared_outputs),
        ):
            for tensor in configured:
                if tensor.name not in declared:
                    raise ConfigError(
                        f"model {spec.name!r}: {kind} {tensor.name!r} is not in signature "
                        f"{signature_name!r} (it has {', '.join(sorted(declared))})"
                    )
                tf_dtype = declared[tensor.name].dtype
                expected = tf.string if tensor.dtype == np.object_ else tf.as_dtype(tensor.dtype)
                if tf_dtype != expected:
                    raise ConfigError(
                        f"model {spec.name!r}: {kind} {tensor.name!r} is {tf_dtype.name} in "
                        f"the SavedModel but {tensor.dtype} in the config"
                    )
        self.output_names = [t.name for t in spec.outputs]

    def run(self, batch):
        outputs = self.signature(**{name: tf.constant(value) for name, value in batch.items()})
        return {name: outputs[name].numpy() for name in self.output_names}
