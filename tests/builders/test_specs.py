"""Typed specs render to config.pbtxt that Triton's proto accepts and reads back."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from builders.specs import (
    DynamicBatching,
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    QueuePolicy,
    SpecError,
    TensorSpec,
    VersionPolicy,
    parse_pbtxt,
    queue_policy,
    render_pbtxt,
    with_slo,
)


def ranker(**overrides):
    values = dict(
        name="search_ranker",
        backend="onnxruntime",
        max_batch_size=16,
        inputs=(TensorSpec("sparse", "INT64", (-1, 5)), TensorSpec("dense", "FP32", (-1, 4))),
        outputs=(TensorSpec("score", "FP32", (-1,)),),
        dynamic_batching=DynamicBatching(500, (4, 8)),
        instance_count=2,
        parameters={"intra_op_thread_count": "1"},
    )
    values.update(overrides)
    return ModelSpec(**values)


def test_round_trip_through_the_proto():
    spec = ranker()
    text = spec.to_pbtxt()
    parsed = parse_pbtxt(text)
    assert parsed["name"] == "search_ranker" and parsed["platform"] == "onnxruntime_onnx"
    assert parsed["input"][0] == {"name": "sparse", "data_type": "TYPE_INT64", "dims": ["-1", "5"]}
    assert parsed["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert parsed["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]
    assert parsed["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    assert parsed["version_policy"] == {"latest": {"num_versions": 1}}
    assert render_pbtxt(parsed) == text


def test_gpu_profile_options():
    spec = ranker(instance_kind="KIND_GPU", gpu_accelerator_fp16=True)
    accelerator = parse_pbtxt(spec.to_pbtxt())["optimization"]["execution_accelerators"]
    assert accelerator["gpu_execution_accelerator"][0]["parameters"] == {"precision_mode": "FP16"}
    plan = ranker(backend="tensorrt")
    assert plan.default_model_filename == "model.plan"
    assert parse_pbtxt(plan.to_pbtxt())["platform"] == "tensorrt_plan"


def test_queue_bounds_derive_from_the_slo():
    assert queue_policy(100, 64) == QueuePolicy(max_queue_size=128, timeout_microseconds=50_000)
    assert queue_policy(250, 8) == QueuePolicy(16, 125_000)
    assert queue_policy(0.001, 1) == QueuePolicy(2, 1)
    for slo_ms, batch in ((0, 64), (-5, 64), (100, 0)):
        with pytest.raises(SpecError, match="queue policy needs"):
            queue_policy(slo_ms, batch)
    with pytest.raises(SpecError, match="bounded queue needs"):
        QueuePolicy(0, 1000)


def test_a_bounded_queue_round_trips_through_the_proto():
    spec = ranker(dynamic_batching=DynamicBatching(500, (4,), QueuePolicy(8, 20_000)))
    text = spec.to_pbtxt()
    policy = text_format.Parse(text, model_config_pb2.ModelConfig()).dynamic_batching
    assert policy.default_queue_policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert parse_pbtxt(text)["dynamic_batching"]["default_queue_policy"] == {
        "default_timeout_microseconds": "20000",
        "allow_timeout_override": True,
        "max_queue_size": 8,
    }
    assert render_pbtxt(parse_pbtxt(text)) == text
    assert "default_queue_policy" not in parse_pbtxt(ranker().to_pbtxt())["dynamic_batching"]


def test_a_build_slo_rebounds_the_queues_of_batching_models_only():
    bounded = with_slo(ranker(), 250)
    assert bounded.dynamic_batching.queue_policy == queue_policy(250, 16)
    assert bounded.dynamic_batching.preferred_batch_size == (4, 8)
    unbatched = ranker(dynamic_batching=None)
    assert with_slo(unbatched, 250) is unbatched
    assert with_slo(ranker(), None) == ranker()  # no SLO: the queue stays unbounded


def test_specific_version_policy():
    spec = ranker(version_policy=VersionPolicy(latest=None, specific=(1, 3)))
    assert parse_pbtxt(spec.to_pbtxt())["version_policy"] == {"specific": {"versions": ["1", "3"]}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "bad name"}, "not a valid Triton name"),
        ({"backend": "pytorch"}, "backend must be one of"),
        ({"max_batch_size": 0}, "dynamic batching needs max_batch_size > 0"),
        ({"dynamic_batching": DynamicBatching(100, (32,))}, r"preferred_batch_size \[32\] exceeds"),
        ({"instance_count": 0}, "instance_count must be >= 1"),
        ({"instance_kind": "KIND_TPU"}, "KIND_CPU or KIND_GPU"),
        ({"outputs": (TensorSpec("sparse", "FP32", (1,)),)}, "tensor names must be unique"),
        ({"backend": "python", "gpu_accelerator_fp16": True}, "accelerator is for ONNX"),
    ],
)
def test_invalid_specs_are_refused(overrides, message):
    with pytest.raises(SpecError, match=message):
        ranker(**overrides)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", "FLOAT", (1,)), "data_type must be one of"),
        (("x", "FP32", ()), "dims must be positive or -1"),
        (("x", "FP32", (0,)), "dims must be positive or -1"),
    ],
)
def test_invalid_tensors_are_refused(args, message):
    with pytest.raises(SpecError, match=message):
        TensorSpec(*args)


def test_version_policy_is_one_or_the_other():
    with pytest.raises(SpecError):
        VersionPolicy(latest=2, specific=(1,))
    with pytest.raises(SpecError):
        VersionPolicy(latest=0)


def test_render_rejects_unknown_fields():
    with pytest.raises(SpecError, match="not a valid Triton model config"):
        render_pbtxt({"name": "x", "max_batchsize": 4})


def _step(model, inputs, outputs):
    return EnsembleStep(model, 1, {name: name for name in inputs}, {n: n for n in outputs})


def test_ensemble_round_trips_through_the_proto():
    spec = EnsembleSpec(
        name="pipe",
        inputs=(TensorSpec("a", "FP32", (4,)),),
        outputs=(TensorSpec("c", "FP32", (4,)),),
        steps=(_step("first", ["a"], ["b"]), _step("second", ["b"], ["c"])),
        max_batch_size=8,
    )
    config = parse_pbtxt(spec.to_pbtxt())
    assert config["platform"] == "ensemble" and config["max_batch_size"] == 8
    steps = config["ensemble_scheduling"]["step"]
    assert [(s["model_name"], s["input_map"], s["output_map"]) for s in steps] == [
        ("first", {"a": "a"}, {"b": "b"}),
        ("second", {"b": "b"}, {"c": "c"}),
    ]
    assert with_slo(spec, 100) is spec  # its steps queue, an ensemble does not


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((), "needs at least one step"),
        ((_step("first", ["x"], ["c"]),), "reads x, which no ensemble input"),
        ((_step("first", ["a"], ["a"]),), "writes a again"),
        ((_step("first", ["a"], ["b"]),), "no step writes output"),
    ],
)
def test_invalid_ensembles_are_refused(steps, message):
    with pytest.raises(SpecError, match=message):
        EnsembleSpec(
            name="pipe",
            inputs=(TensorSpec("a", "FP32", (4,)),),
            outputs=(TensorSpec("c", "FP32", (4,)),),
            steps=steps,
        )


def test_a_step_pins_a_version():
    with pytest.raises(SpecError, match="pin a version >= 1"):
        EnsembleStep("first", 0, {"a": "a"}, {"b": "b"})


def test_an_ensemble_tensor_nobody_reads_is_refused():
    from builders.specs import EnsembleSpec, EnsembleStep, SpecError, TensorSpec

    step = EnsembleStep("m", 1, {"x": "x"}, {"y": "y", "z": "z"})
    with pytest.raises(SpecError, match="z are never read"):
        EnsembleSpec(
            name="e",
            inputs=(TensorSpec("x", "FP32", (1,)),),
            outputs=(TensorSpec("y", "FP32", (1,)),),
            steps=(step,),
        )


def test_every_model_gets_a_warmup_sample_from_its_inputs():
    spec = ranker(
        inputs=(
            TensorSpec("sparse", "INT64", (-1, 5)),
            TensorSpec("dense", "FP32", (-1, 4)),
            TensorSpec("k", "INT32", (1,), warmup_value=10),
        )
    )
    (sample,) = parse_pbtxt(spec.to_pbtxt())["model_warmup"]
    assert sample["batch_size"] == 1
    assert sample["inputs"]["sparse"] == {
        "data_type": "TYPE_INT64",
        "dims": ["1", "5"],
        "zero_data": True,
    }
    assert sample["inputs"]["k"] == {
        "data_type": "TYPE_INT32",
        "dims": ["1"],
        "input_data_file": "k",
    }
    assert spec.warmup_files() == {"k": (10).to_bytes(4, "little")}


def test_a_text_input_warms_up_with_its_text():
    query = TensorSpec("query", "STRING", (2,), warmup_value="red shoes")
    spec = ranker(inputs=(query,), outputs=(TensorSpec("ids", "INT64", (-1,)),))
    assert spec.warmup_files() == {"query": 2 * ((9).to_bytes(4, "little") + b"red shoes")}
    with pytest.raises(SpecError, match="STRING input.s. query need a warmup_value"):
        ranker(inputs=(TensorSpec("query", "STRING", (1,)),))
    with pytest.raises(SpecError, match="warmup_value of a STRING tensor is a text"):
        TensorSpec("k", "INT32", (1,), warmup_value="10")


def test_ensembles_take_no_warmup():
    spec = EnsembleSpec(
        name="pipe",
        inputs=(TensorSpec("a", "STRING", (1,)),),
        outputs=(TensorSpec("b", "FP32", (4,)),),
        steps=(_step("first", ["a"], ["b"]),),
    )
    assert "model_warmup" not in parse_pbtxt(spec.to_pbtxt())
