"""Versioned model directories: layout, manifests, no silent overwrite."""

import json

import pytest

from builders.repository import (
    RepositoryError,
    VersionExistsError,
    model_versions,
    next_version,
    read_manifest,
    set_served_versions,
    verify_version,
    write_version,
)
from builders.specs import ModelSpec, TensorSpec, parse_pbtxt


def spec(name="encoder", dims=(4,)):
    return ModelSpec(
        name=name,
        backend="onnxruntime",
        max_batch_size=8,
        inputs=(TensorSpec("x", "FP32", dims),),
        outputs=(TensorSpec("y", "FP32", (2,)),),
    )


def writer(content=b"weights"):
    def populate(folder):
        (folder / "model.onnx").write_bytes(content)
        (folder / "extra").mkdir()
        (folder / "extra" / "vocab.txt").write_text("a\nb\n")

    return populate


def test_layout_and_manifest(tmp_path):
    target = write_version(tmp_path, spec(), 1, writer(), {"depends_on": {"tokenizer": 3}})
    assert target == tmp_path / "encoder" / "1"
    assert (tmp_path / "encoder" / "config.pbtxt").exists()
    manifest = read_manifest(tmp_path, "encoder", 1)
    assert set(manifest["files"]) == {"model.onnx", "extra/vocab.txt"}
    assert manifest["depends_on"] == {"tokenizer": 3} and manifest["version"] == 1
    assert manifest["config"]["name"] == "encoder"
    assert verify_version(tmp_path, "encoder", 1) == []
    (target / "__pycache__").mkdir()
    (target / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"cache")
    assert verify_version(tmp_path, "encoder", 1) == []
    (target / "model.plan").write_bytes(b"built later on a GPU node")
    assert verify_version(tmp_path, "encoder", 1) == []
    (target / "model.onnx").write_bytes(b"tampered")
    assert verify_version(tmp_path, "encoder", 1) == ["model.onnx"]


def test_existing_version_is_refused_and_untouched(tmp_path):
    write_version(tmp_path, spec(), 1, writer(b"first"), {})
    before = (tmp_path / "encoder" / "1" / "manifest.json").read_text()
    with pytest.raises(VersionExistsError, match="encoder version 1 already exists"):
        write_version(tmp_path, spec(), 1, writer(b"second"), {})
    assert (tmp_path / "encoder" / "1" / "model.onnx").read_bytes() == b"first"
    assert (tmp_path / "encoder" / "1" / "manifest.json").read_text() == before


def test_failed_build_leaves_nothing(tmp_path):
    def failing(folder):
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        write_version(tmp_path, spec(), 1, failing, {})
    assert model_versions(tmp_path, "encoder") == []
    assert [p.name for p in (tmp_path / "encoder").iterdir()] == []


def test_versions_and_next(tmp_path):
    assert next_version(tmp_path, ["encoder", "ranker"]) == 1
    write_version(tmp_path, spec(), 1, writer(), {})
    write_version(tmp_path, spec(), 2, writer(), {})
    write_version(tmp_path, spec("ranker"), 5, writer(), {})
    assert model_versions(tmp_path, "encoder") == [1, 2]
    assert next_version(tmp_path, ["encoder", "ranker"]) == 6


def test_interface_change_is_refused(tmp_path):
    write_version(tmp_path, spec(), 1, writer(), {})
    with pytest.raises(RepositoryError, match="changes `input`"):
        write_version(tmp_path, spec(dims=(8,)), 2, writer(), {})
    assert model_versions(tmp_path, "encoder") == [1]


def test_set_served_versions(tmp_path):
    write_version(tmp_path, spec(), 1, writer(), {})
    set_served_versions(tmp_path, "encoder", [1, 2])
    config = parse_pbtxt((tmp_path / "encoder" / "config.pbtxt").read_text())
    assert config["version_policy"] == {"specific": {"versions": ["1", "2"]}}
    assert json.loads((tmp_path / "encoder" / "1" / "manifest.json").read_text())["version"] == 1


def test_warmup_files_go_to_the_model_folder(tmp_path):
    text = ModelSpec(
        name="tokenizer",
        backend="python",
        max_batch_size=8,
        inputs=(TensorSpec("query", "STRING", (1,), warmup_value="blender"),),
        outputs=(TensorSpec("ids", "INT64", (-1,)),),
    )
    write_version(tmp_path, text, 1, writer(), {})
    warmup = tmp_path / "tokenizer" / "warmup"
    assert [p.name for p in warmup.iterdir()] == ["query"]
    assert (warmup / "query").read_bytes() == (7).to_bytes(4, "little") + b"blender"
    assert model_versions(tmp_path, "tokenizer") == [1]
