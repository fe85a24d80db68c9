"""Tiny ONNX and SavedModel models, generated for the tests, in Triton's layout.

Each writer puts `<repo>/<name>/config.pbtxt` (built through Triton's own
ModelConfig proto) and `<repo>/<name>/1/model.*`, and returns the config dict.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import json_format, text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VOCAB = 10  # item ids 0..9 are valid for the `ranker` model


def write_config(model_dir: Path, config: dict) -> None:
    """Write config.pbtxt through Triton's proto (so the schema is checked)."""
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(message))


def _tensor(name: str, data_type: str, dims: list[int], **extra) -> dict:
    return {"name": name, "data_type": data_type, "dims": dims, **extra}


def ranker_config(name: str, max_batch_size: int = 8, **extra) -> dict:
    return {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size,
        "input": [
            _tensor("features", "TYPE_FP32", [4]),
            _tensor("item_id", "TYPE_INT64", [1]),
        ],
        "output": [_tensor("score", "TYPE_FP32", [3])],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        **extra,
    }


def ranker_onnx(seed: int = 0) -> onnx.ModelProto:
    """score = relu(features @ W + embedding[item_id] + b); ids outside 0..9 fail in Gather."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    table = rng.normal(size=(VOCAB, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", ["features", "W"], ["dense"]),
            helper.make_node("Squeeze", ["item_id", "axis1"], ["ids"]),
            helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
            helper.make_node("Add", ["dense", "emb"], ["sum"]),
            helper.make_node("Add", ["sum", "b"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["score"]),
        ],
        name="ranker",
        inputs=[
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("item_id", TensorProto.INT64, ["batch", 1]),
        ],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_ranker(repo: Path, name: str = "ranker", **config_extra) -> dict:
    config = ranker_config(name, **config_extra)
    write_config(repo / name, config)
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(ranker_onnx(), repo / name / "1" / "model.onnx")
    return config


def doubler_onnx() -> onnx.ModelProto:
    """y = 2 * x on a [batch, 2, 2] tensor (the config exposes it as [4] via `reshape`)."""
    graph = helper.make_graph(
        nodes=[helper.make_node("Mul", ["x", "two"], ["y"])],
        name="doubler",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 2])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 2])],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write_doubler(repo: Path, name: str = "doubler") -> dict:
    config = {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": 4,
        "input": [_tensor("x", "TYPE_FP32", [4], reshape={"shape": [2, 2]})],
        "output": [_tensor("y", "TYPE_FP32", [4], reshape={"shape": [2, 2]})],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    }
    write_config(repo / name, config)
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(doubler_onnx(), repo / name / "1" / "model.onnx")
    return config


def tower_config(name: str, max_batch_size: int = 8, **extra) -> dict:
    return {
        "name": name,
        "backend": "tensorflow",
        "platform": "tensorflow_savedmodel",
        "max_batch_size": max_batch_size,
        "input": [_tensor("features", "TYPE_FP32", [4])],
        "output": [_tensor("output_0", "TYPE_FP32", [3])],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        **extra,
    }


def write_tower(repo: Path, name: str = "tower", **config_extra) -> dict:
    """A Keras 3 MLP exported as a SavedModel (signature input `features`, output `output_0`)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,), name="features", dtype="float32")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="tanh")(hidden)
    model = keras.Model(inputs, outputs)
    config = tower_config(name, **config_extra)
    write_config(repo / name, config)
    model.export(
        str(repo / name / "1" / "model.savedmodel"), format="tf_saved_model", verbose=False
    )
    return config
