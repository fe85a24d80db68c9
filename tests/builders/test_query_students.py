"""The query students: their training texts, their fit to the teacher, their ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import encoder_variants, names, query_students, text_encoder
from builders.build import item_texts
from builders.data import load_dataset
from builders.repository import read_manifest
from builders.text_encoder import ONNX_ATOL, ParityError


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic", seed=5, n_items=400, n_users=60)


def test_distillation_texts_leave_out_the_held_out_queries(dataset):
    held_out = encoder_variants.held_out_queries(dataset, n=50)
    texts = query_students.distillation_texts(dataset, held_out, item_texts(dataset))
    assert set(texts) == {
        "logged_queries",
        "titles",
        "title_fragments",
        "attribute_phrases",
        "typos",
    }
    everything = {text.lower() for kind in texts.values() for text in kind}
    assert not everything & {query.lower() for query in held_out}
    logged = set(dataset.interactions["query"].dropna())
    assert set(texts["logged_queries"]) == logged - set(held_out)
    assert (
        0.9 * 2 * len(dataset.catalog) < len(texts["title_fragments"]) <= 2 * len(dataset.catalog)
    )
    assert all(text.strip() for kind in texts.values() for text in kind)
    again = query_students.distillation_texts(dataset, held_out, item_texts(dataset))
    assert again == texts  # seeded


def test_a_typo_changes_one_letter_of_one_word():
    rng = np.random.default_rng(0)
    for _ in range(50):
        changed = query_students.typo("waterproof hiking boots", rng)
        words = changed.split()
        assert len(words) == 3
        differing = [a for a, b in zip(words, ["waterproof", "hiking", "boots"]) if a != b]
        assert len(differing) <= 1
    assert query_students.typo("tv 4k", rng) == "tv 4k"  # no word of three letters


def test_the_static_student_is_a_masked_mean_of_token_vectors():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    student = query_students.StaticEncoder(vectors).eval()
    ids = torch.tensor([[1, 2, 0], [3, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    with torch.no_grad():
        embedded = student(ids, mask).numpy()
    expected = np.stack([vectors[1:3].mean(axis=0), vectors[3]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embedded, expected, rtol=1e-6)


def test_token_vectors_embed_each_token_alone():
    calls = []

    def teacher(ids, mask):
        calls.append(ids.shape)
        assert (ids[:, 0] == 101).all() and (ids[:, 2] == 102).all() and (mask == 1).all()
        return np.repeat(ids[:, 1:2].astype(np.float32), 4, axis=1)

    vectors = query_students.token_vectors(teacher, 2050, cls_id=101, sep_id=102)
    assert vectors.shape == (2050, 4) and (vectors[:, 0] == np.arange(2050)).all()
    assert calls == [(1024, 3), (1024, 3), (2, 3)]


def test_fitting_brings_a_student_towards_its_targets():
    rng = np.random.default_rng(1)
    texts = ["red running shoes", "blue wool socks", "steel saucepan", "linen dress"] * 8
    targets = rng.normal(size=(4, 8)).astype(np.float32)
    targets = np.tile(targets / np.linalg.norm(targets, axis=1, keepdims=True), (8, 1))
    vectors = rng.normal(size=(30522, 8)).astype(np.float32)
    recipe = query_students.Recipe(epochs=30, batch_size=8, learning_rate=0.05)
    student = query_students.StaticEncoder(vectors)
    record = query_students.fit(
        student, texts, targets, text_encoder.tokenizer_json(), recipe, 0, "test", progress=False
    )
    losses = record["loss_per_epoch"]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]
    assert {"epochs", "batch_size", "learning_rate", "seed", "seconds"} <= set(record)
    assert not student.training


@pytest.mark.slow
def test_a_student_export_is_checked_against_torch(tmp_path):
    vectors = np.random.default_rng(2).normal(size=(30522, 384)).astype(np.float32)
    student = query_students.StaticEncoder(vectors)
    parity = text_encoder.export_onnx(tmp_path / "static.onnx", student)
    assert parity["max_abs_diff"] <= ONNX_ATOL == 1e-4
    with torch.no_grad():
        student.vectors.weight[:, :10] += 0.1
    with pytest.raises(ParityError, match="differs from torch"):
        text_encoder.onnx_parity(student, tmp_path / "static.onnx")


@pytest.mark.slow
def test_the_build_records_each_students_training_and_parity(small_repository, small_dataset):
    teacher = read_manifest(small_repository, names.TEXT_ENCODER, 1)
    record = teacher["metrics"]["variants"]
    assert set(record["variants"]) == set(names.QUERY_ENCODERS)
    assert record["chosen"] in names.QUERY_ENCODERS
    assert record["variants"][record["chosen"]]["passes"]
    for student in names.QUERY_ENCODERS[1:]:
        manifest = read_manifest(small_repository, student, 1)
        assert manifest["depends_on"] == {names.TEXT_ENCODER: 1}
        assert manifest["parity"]["max_abs_diff"] <= ONNX_ATOL
        training = manifest["metrics"]["training"]
        assert training["data"]["total"] == sum(training["data"]["texts"].values()) > 0
        assert training["data"]["texts"]["logged_queries"] > 0
        assert len(training["loss_per_epoch"]) == training["epochs"]
        assert training["loss_per_epoch"][-1] < training["loss_per_epoch"][0]
        assert manifest["metrics"]["ndcg_at_10"] is not None
