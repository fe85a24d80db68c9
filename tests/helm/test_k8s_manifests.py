"""The manifests in k8s/ validate, and the TensorRT plan builder's logic is right."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from builders import names, profiles
from builders.build import BuildOptions
from builders.runtime import features
from k8s import tools

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "k8s"
BUILD = K8S / "tensorrt-build"


@pytest.fixture(scope="module")
def build_plans():
    """k8s/tensorrt-build/build_plans.py (a script shipped in a ConfigMap) as a module."""
    spec = importlib.util.spec_from_file_location("build_plans", BUILD / "build_plans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tensorrt_manifests() -> list[dict]:
    kubectl = tools.kubectl_path()
    if kubectl is None:
        pytest.fail("kubectl not found on PATH or in build/tools: run `make helm-tools`")
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(BUILD)], capture_output=True, text=True, check=True
    ).stdout
    docs = list(yaml.safe_load_all(rendered))
    for job in ("job-pvc.yaml", "job-s3.yaml"):
        docs.append(yaml.safe_load((BUILD / job).read_text()))
    return docs


def test_tensorrt_build_manifests_validate(tensorrt_manifests, kube_version):
    kinds = []
    for doc in tensorrt_manifests:
        kubernetes_validate.validate(doc, kube_version, strict=True)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["ConfigMap", "Job", "Job"]


def test_tensorrt_jobs_run_the_shipped_script_on_a_gpu(tensorrt_manifests):
    (configmap,) = [d for d in tensorrt_manifests if d["kind"] == "ConfigMap"]
    assert configmap["data"]["build_plans.py"] == (BUILD / "build_plans.py").read_text()
    assert json.loads(configmap["data"]["plans.json"])["plans"]
    for job in (d for d in tensorrt_manifests if d["kind"] == "Job"):
        pod = job["spec"]["template"]["spec"]
        containers = pod.get("initContainers", []) + pod["containers"]
        (build,) = [c for c in containers if c["image"].startswith("nvcr.io/nvidia/tensorrt:")]
        assert build["image"] == "nvcr.io/nvidia/tensorrt:24.10-py3"
        assert build["command"][:2] == ["python3", "/scripts/build_plans.py"]
        assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
        scripts = [v for v in pod["volumes"] if v["name"] == "scripts"][0]
        assert scripts["configMap"]["name"] == configmap["metadata"]["name"]


def test_example_gateway_matches_the_published_crd(validate_custom_resources):
    gateway = yaml.safe_load((K8S / "gateway" / "gateway.yaml").read_text())
    (result,) = validate_custom_resources([gateway])
    assert result == {"kind": "Gateway", "name": "triton-gateway", "errors": []}


def test_shipped_plan_list_is_valid(build_plans):
    plans = build_plans.load_plans((BUILD / "plans.json").read_text())
    assert {p["model"] for p in plans} == set(profiles.TENSORRT_MODELS)


def test_shipped_plans_match_what_the_builder_serves_as_plans(build_plans):
    """Model names, input names and shapes are the builder's (default build options)."""
    plans = {p["model"]: p for p in build_plans.load_plans((BUILD / "plans.json").read_text())}
    defaults = BuildOptions(repo=Path("unused"))

    def dims(batch: int, *rest: int) -> str:
        return "x".join(str(d) for d in (batch, *rest))

    encoder = plans[names.TEXT_ENCODER]
    encoder_inputs = [t.name for t in names.text_encoder_spec(names.TEXT_ENCODER).inputs]
    assert list(encoder["shapes"]) == encoder_inputs == ["input_ids", "attention_mask"]
    for shapes in encoder["shapes"].values():
        # narrowest length bucket to max_length (the tokenizer's widths)
        assert shapes == [dims(*shape) for shape in defaults.encoder_plan_shapes()]
    ranker = plans[names.SEARCH_RANKER]
    ranker_inputs = [t.name for t in names.ranker_spec(names.SEARCH_RANKER, "tensorrt").inputs]
    assert list(ranker["shapes"]) == ranker_inputs == ["sparse", "dense"]
    for name, width in (("sparse", features.NUM_SPARSE), ("dense", features.NUM_DENSE)):
        expected = [dims(b, defaults.num_candidates, width) for b in (1, 8, names.STAGE_MAX_BATCH)]
        assert ranker["shapes"][name] == expected
    for model, entry in plans.items():
        gpu = profiles.adapt(
            names.text_encoder_spec(model)
            if model == names.TEXT_ENCODER
            else names.ranker_spec(model, "onnxruntime"),
            "gpu",
        )
        # The builder's configs/gpu.pbtxt serves exactly this file, batching up to the max shape.
        assert gpu.backend == "tensorrt" and gpu.default_model_filename == entry["plan"]
        assert gpu.max_batch_size == names.STAGE_MAX_BATCH
        assert entry["onnx"] == "model.onnx" and entry["version"] == "1"


def test_derived_triton_image_adds_the_pinned_tokenizers_to_the_chart_image(chart):
    """k8s/image/Dockerfile: the chart's default image plus the project's tokenizers pin."""
    dockerfile = (K8S / "image" / "Dockerfile").read_text()
    values = yaml.safe_load((chart / "values.yaml").read_text())
    (base,) = re.findall(r"^FROM\s+(\S+)\s*$", dockerfile, re.MULTILINE)
    assert base == f"{values['image']['repository']}:{values['image']['tag']}"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"(tokenizers==[^"]+)"', pyproject)
    assert f"pip install --no-cache-dir {pin}" in dockerfile


def test_trtexec_command_builds_an_fp16_profile(build_plans):
    entry = {
        "model": "text_encoder",
        "version": "1",
        "onnx": "model.onnx",
        "plan": "model.plan",
        "workspace_mib": 2048,
        "shapes": {"input_ids": ["1x16", "32x16", "64x16"], "mask": ["1x16", "32x16", "64x16"]},
    }
    argv = build_plans.trtexec_command(entry, Path("/m/a.onnx"), Path("/m/a.plan"))
    assert argv == [
        "trtexec",
        "--onnx=/m/a.onnx",
        "--saveEngine=/m/a.plan",
        "--minShapes=input_ids:1x16,mask:1x16",
        "--optShapes=input_ids:32x16,mask:32x16",
        "--maxShapes=input_ids:64x16,mask:64x16",
        "--fp16",
        "--memPoolSize=workspace:2048M",
    ]
    no_fp16 = build_plans.trtexec_command(
        {**entry, "fp16": False, "shapes": {}}, Path("a"), Path("b")
    )
    assert no_fp16 == ["trtexec", "--onnx=a", "--saveEngine=b", "--memPoolSize=workspace:2048M"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "must be JSON"),
        ('{"plans": [{"model": "m", "version": "1"}]}', "plan 0 lacks onnx, plan, shapes"),
        (
            '{"plans": [{"model": "m", "version": "1", "onnx": "a", "plan": "b",'
            ' "shapes": {"x": ["1x4", "8x4"]}}]}',
            'shapes of \'x\' must be ["min", "opt", "max"]',
        ),
    ],
)
def test_bad_plan_lists_are_rejected(build_plans, text, message):
    with pytest.raises(build_plans.PlanError, match=re.escape(message)):
        build_plans.load_plans(text)


def test_plans_are_rebuilt_when_source_gpu_or_flags_change(build_plans, tmp_path):
    plan = tmp_path / "model.plan"
    record_path = tmp_path / "model.plan.build.json"
    argv = ["trtexec", "--onnx=a", "--saveEngine=b", "--fp16"]
    record = build_plans.build_record("abc", "NVIDIA L4", "10.5.0", argv)
    assert not build_plans.is_current(record_path, plan, record)  # nothing built yet
    plan.write_bytes(b"plan")
    record_path.write_text(json.dumps(record))
    assert build_plans.is_current(record_path, plan, record)
    moved = build_plans.build_record(
        "abc", "NVIDIA L4", "10.5.0", ["trtexec", "--onnx=c", "--saveEngine=d", "--fp16"]
    )
    assert build_plans.is_current(record_path, plan, moved)  # paths do not matter
    for changed in (
        build_plans.build_record("abd", "NVIDIA L4", "10.5.0", argv),
        build_plans.build_record("abc", "NVIDIA H100", "10.5.0", argv),
        build_plans.build_record("abc", "NVIDIA L4", "10.5.0", argv[:3]),
    ):
        assert not build_plans.is_current(record_path, plan, changed)
