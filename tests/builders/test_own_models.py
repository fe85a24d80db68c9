"""A team's own models: the build file, each check's message, the conversions' parity, and a
refused build that writes nothing."""

from __future__ import annotations

import os
import re

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from builders import names, own_models, text_encoder
from builders.build import BuildOptions, build
from builders.data import load_dataset
from builders.own_models import EncoderSpec, OwnModelError, OwnModels, RankerInput, RankerSpec
from builders.repository import CONFIG, write_config
from builders.runtime.features import DENSE_FEATURES, SPARSE_FEATURES
from builders.specs import parse_pbtxt
from tests import own_model_files as files

os.environ.setdefault("USE_TF", "0")
FEATURES = ("retrieval_score", "category", "log_popularity")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic", seed=3, n_items=300, n_users=60)


@pytest.fixture(scope="module")
def sample(dataset):
    return own_models.sample_features(dataset)


def ranker_spec(path, features=FEATURES, name="features", dtype="float32", output="score"):
    return RankerSpec(path, (RankerInput(name, tuple(features), dtype),), output)


# -- the build file --------------------------------------------------------------------
def write_file(folder, text):
    (folder / "ranker.onnx").write_bytes(b"")
    (folder / "encoder").mkdir(exist_ok=True)
    path = folder / "models.yaml"
    path.write_text(text)
    return path


GOOD = """
encoder:
  path: encoder
search_ranker:
  path: ranker.onnx
  inputs:
    - name: features
      features: [retrieval_score, lexical_score]
"""


def test_the_build_file_parses_into_typed_specs_with_paths_from_its_folder(tmp_path):
    own = own_models.load(write_file(tmp_path, GOOD))
    assert own.encoder == EncoderSpec(tmp_path / "encoder")
    assert own.search_ranker == RankerSpec(
        tmp_path / "ranker.onnx",
        (RankerInput("features", ("retrieval_score", "lexical_score"), "float32"),),
        "score",
    )
    assert own.search_ranker.kind == "onnx" and own.recommend_ranker is None
    assert own.rankers == {names.SEARCH_RANKER: own.search_ranker}


@pytest.mark.parametrize(
    "text, message",
    [
        ("encoder:\n  path: encoder\n  pooling: cls\n", "encoder: unknown key(s) pooling"),
        ("rankers: {}\n", "the models file: unknown key(s) rankers"),
        (
            "search_ranker:\n  path: ranker.onnx\n",
            "search_ranker: missing key(s) search_ranker.inputs",
        ),
        ("encoder:\n  path: elsewhere\n", "encoder.path: no such folder"),
        ("encoder:\n  path: 3\n", "encoder.path: expected a non-empty string, got 3"),
        ("encoder: [encoder]\n", "encoder: expected a mapping, got list"),
        (
            GOOD.replace("[retrieval_score, lexical_score]", "retrieval_score"),
            "search_ranker.inputs[0].features: expected a non-empty list",
        ),
        (
            GOOD.replace("lexical_score]", "ctr]"),
            "search_ranker.inputs[0].features: unknown feature(s) ctr",
        ),
        (
            GOOD.replace("- name: features", "- name: features\n      dtype: float64"),
            "search_ranker.inputs[0].dtype: 'float64' is not one of float32, int64",
        ),
        (
            "two_tower:\n  user_tower: ranker.onnx\n  item_embeddings: ranker.onnx\n",
            "two_tower.item_embeddings: expected a .npz or .parquet file",
        ),
        ("encoder: {path: encoder\n", "cannot read the models file"),
    ],
)
def test_build_file_mistakes_are_clear_errors_naming_the_key(tmp_path, text, message):
    with pytest.raises(OwnModelError, match=re.escape(message)):
        own_models.load(write_file(tmp_path, text))


def test_flags_add_models_and_need_their_features(tmp_path):
    files.write_onnx_ranker(tmp_path / "r.onnx", 2)
    own = own_models.with_flags(
        OwnModels(),
        {"search_ranker": tmp_path / "r.onnx", "search_ranker_features": "price_gap, brand"},
    )
    assert own.search_ranker.inputs == (RankerInput("features", ("price_gap", "brand")),)
    with pytest.raises(OwnModelError, match="--search-ranker needs --search-ranker-features"):
        own_models.with_flags(OwnModels(), {"search_ranker": tmp_path / "r.onnx"})
    with pytest.raises(OwnModelError, match="--user-tower and --item-embeddings go together"):
        own_models.with_flags(OwnModels(), {"user_tower": tmp_path / "r.onnx"})


# -- the encoder ---------------------------------------------------------------------------
def pooled_by_hand(folder, texts, pooling, normalize):
    """What sentence-transformers computes: transformers' BERT, then the pooling by hand."""
    from transformers import BertModel

    from builders.runtime.tokenization import QueryTokenizer

    ids, mask = QueryTokenizer(folder / "tokenizer.json", 32).encode(texts)
    bert = BertModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        tokens = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    tokens, keep = tokens.last_hidden_state.numpy(), mask[..., None].astype(bool)
    if pooling == "cls":
        pooled = tokens[:, 0]
    elif pooling == "max":
        pooled = np.where(keep, tokens, -np.inf).max(axis=1)
    else:
        pooled = (tokens * keep).sum(axis=1) / keep.sum(axis=1)
    if normalize:
        pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return ids, mask, pooled


@pytest.mark.parametrize("pooling, normalize", [("cls", False), ("max", True), ("mean", True)])
def test_the_encoder_is_exported_with_its_own_pooling_and_normalisation(
    tmp_path, dataset, pooling, normalize
):
    folder = files.write_bert_folder(
        tmp_path / "encoder", dataset.catalog.title, pooling, normalize
    )
    prepared = own_models.prepare(OwnModels(encoder=EncoderSpec(folder)), dataset, tmp_path, {})
    assert prepared.encoder_parity["max_abs_diff"] <= text_encoder.ONNX_ATOL
    assert prepared.sources[names.TEXT_ENCODER] == {
        "path": str(folder),
        "pooling": pooling,
        "normalize": normalize,
        "dim": files.HIDDEN,
    }
    texts = ["red running shoes", "a much longer title of a product with many words"]
    ids, mask, expected = pooled_by_hand(folder, texts, pooling, normalize)
    session = ort.InferenceSession(str(prepared.encoder_onnx))
    (served,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.allclose(np.linalg.norm(served, axis=1), 1) == normalize
    with text_encoder.source(folder):  # the teacher's tokenizer is the encoder's own
        assert text_encoder.tokenizer_json() == folder / "tokenizer.json"
    assert text_encoder.tokenizer_json() != folder / "tokenizer.json"


def test_encoder_folder_mistakes_are_clear_errors(tmp_path, dataset):
    folder = files.write_bert_folder(tmp_path / "encoder", ["shoes"], "mean")
    config = folder / "1_Pooling" / "config.json"
    config.write_text('{"pooling_mode_mean_sqrt_len_tokens": true}')
    with pytest.raises(OwnModelError, match="exactly one of pooling_mode_mean_tokens"):
        own_models.check_encoder_folder(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(OwnModelError, match=r"encoder: .* has no tokenizer.json"):
        own_models.check_encoder_folder(folder)


def test_an_encoder_that_does_not_load_is_a_clear_error(tmp_path, dataset):
    folder = files.write_bert_folder(tmp_path / "encoder", ["shoes"])
    (folder / "model.safetensors").write_bytes(b"not weights")
    own = OwnModels(encoder=EncoderSpec(folder))
    with pytest.raises(OwnModelError, match="encoder: .* does not load"):
        own_models.prepare(own, dataset, tmp_path, {})


def test_an_encoder_of_another_dimension_than_the_index_is_refused_and_nothing_written(
    tmp_path, dataset
):
    """The repository keeps a 384-d search index; a 32-d encoder may not replace the teacher."""
    repo = tmp_path / "repo"
    write_config(repo / names.SEARCH_INDEX / CONFIG, names.index_spec(names.SEARCH_INDEX, 384, 20))
    (repo / names.SEARCH_INDEX / "1").mkdir()
    folder = files.write_bert_folder(tmp_path / "encoder", dataset.catalog.title)
    options = BuildOptions(
        repo=repo,
        only=(names.QUERY_TOKENIZER, names.TEXT_ENCODER),
        own=OwnModels(encoder=EncoderSpec(folder)),
    )
    with pytest.raises(OwnModelError, match="dimension 32 but search_index holds 384-dim"):
        build(options, dataset)
    assert sorted(p.name for p in repo.iterdir()) == [names.SEARCH_INDEX]


# -- rankers ---------------------------------------------------------------------------
def declared_columns(sparse, dense, features=FEATURES):
    return np.stack(
        [
            sparse[..., SPARSE_FEATURES.index(f)]
            if f in SPARSE_FEATURES
            else dense[..., DENSE_FEATURES.index(f)]
            for f in features
        ],
        axis=-1,
    ).astype(np.float32)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_a_ranker_serves_on_the_features_stage_outputs_as_its_framework_scores(
    tmp_path, dataset, sample, kind
):
    if kind == "onnx":
        path = tmp_path / "ranker.onnx"
        module = files.write_onnx_ranker(path, len(FEATURES))
    else:
        path = tmp_path / "ranker.pt"
        module = files.write_torchscript_ranker(path, len(FEATURES))
    parity = own_models.prepare_ranker("search_ranker", ranker_spec(path), dataset, tmp_path / "w")
    assert parity["max_abs_diff"] <= own_models.RANKER_ATOL
    assert parity["against"] == ("onnxruntime" if kind == "onnx" else "torch")
    sparse, dense = sample
    (served,) = ort.InferenceSession(str(tmp_path / "w")).run(
        ["score"], {"sparse": sparse, "dense": dense}
    )
    with torch.no_grad():
        expected = module(torch.from_numpy(declared_columns(sparse, dense))).numpy()
    assert served.shape == sparse.shape[:2]
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_ranker_output_of_width_one_is_squeezed_and_other_names_are_kept(tmp_path, sample):
    path = tmp_path / "r.onnx"
    module = files.write_onnx_ranker(path, 2, input_name="x", output_name="logit")
    spec = ranker_spec(path, ("brand", "price_gap"), name="x", output="logit")
    own_models.prepare_ranker(
        "search_ranker",
        spec,
        load_dataset("synthetic", seed=1, n_items=50, n_users=10),
        tmp_path / "w",
    )
    sparse, dense = sample
    (served,) = ort.InferenceSession(str(tmp_path / "w")).run(
        ["score"], {"sparse": sparse, "dense": dense}
    )
    with torch.no_grad():
        expected = module(torch.from_numpy(declared_columns(sparse, dense, ("brand", "price_gap"))))
    np.testing.assert_allclose(served, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"features": ("retrieval_score", "category")},
            "search_ranker: input features takes 3 features but declares 2 "
            r"\(retrieval_score, category\)",
        ),
        (
            {"dtype": "int64"},
            "search_ranker: input features is float32 in the model, declared int64",
        ),
        (
            {"name": "inputs"},
            "search_ranker: the model reads input.s. features not declared",
        ),
        (
            {"output": "probability"},
            "search_ranker: the model has no output probability; it has score",
        ),
    ],
)
def test_a_ranker_that_differs_from_its_declaration_is_refused(tmp_path, dataset, change, message):
    path = tmp_path / "r.onnx"
    files.write_onnx_ranker(path, len(FEATURES))
    spec = ranker_spec(path, **change)
    with pytest.raises(OwnModelError, match=message):
        own_models.prepare_ranker("search_ranker", spec, dataset, tmp_path / "w")


def test_a_ranker_with_a_fixed_batch_or_a_wrong_rank_is_refused(tmp_path, dataset):
    path = tmp_path / "r.onnx"
    files.write_onnx_ranker(path, len(FEATURES), dynamic=False)
    with pytest.raises(OwnModelError, match=r"shape \[2, 3, 3\]; its batch and candidate axes"):
        own_models.prepare_ranker("search_ranker", ranker_spec(path), dataset, tmp_path / "w")
    info = own_models.TensorInfo("features", "float32", (None, 3))
    out = own_models.TensorInfo("score", "float32", (None, None))
    with pytest.raises(OwnModelError, match=r"shape \[\?, 3\]; expected \[batch, candidates, 3\]"):
        own_models.check_ranker_io("search_ranker", ranker_spec(path), [info], [out])


def test_a_ranker_file_that_does_not_load_is_a_clear_error(tmp_path, dataset):
    for name in ("r.onnx", "r.pt"):
        (tmp_path / name).write_bytes(b"\x00not a model")
        kind = "ONNX" if name.endswith("onnx") else "TorchScript"
        with pytest.raises(OwnModelError, match=f"search_ranker: .*{name} does not load as {kind}"):
            own_models.prepare_ranker(
                "search_ranker", ranker_spec(tmp_path / name), dataset, tmp_path / "w"
            )


def test_a_failed_build_leaves_no_version_folder(tmp_path, dataset):
    """The ranker's mismatch is found before the tokenizer or any other model is written."""
    path = tmp_path / "r.onnx"
    files.write_onnx_ranker(path, 4)
    repo = tmp_path / "repo"
    options = BuildOptions(
        repo=repo,
        only=(names.QUERY_TOKENIZER, names.RANKING_FEATURES, names.SEARCH_RANKER),
        own=OwnModels(search_ranker=ranker_spec(path)),
    )
    with pytest.raises(OwnModelError, match="takes 4 features but declares 3"):
        build(options, dataset)
    assert not any(p.is_dir() for p in repo.glob("*/*"))


def test_a_model_the_build_does_not_write_is_refused(tmp_path, dataset):
    path = tmp_path / "r.onnx"
    files.write_onnx_ranker(path, 3)
    options = BuildOptions(
        repo=tmp_path / "repo",
        only=(names.TOP_K,),
        own=OwnModels(search_ranker=ranker_spec(path)),
    )
    with pytest.raises(OwnModelError, match="own model.s. given for search_ranker, which this"):
        build(options, dataset)


# -- two-tower ------------------------------------------------------------------------------
def tower_and_items(tmp_path, dataset, ids=None, dim=8):
    weights = files.write_user_tower(tmp_path / "tower.onnx", dim)
    ids = np.sort(dataset.catalog.item_id.to_numpy()) if ids is None else np.asarray(ids)
    vectors = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    return weights, ids, vectors


def prepare_tower(tmp_path, dataset, embeddings):
    spec = own_models.TwoTowerSpec(tmp_path / "tower.onnx", embeddings)
    return own_models.prepare(OwnModels(two_tower=spec), dataset, tmp_path, {})


def test_a_two_tower_serves_the_given_tower_and_embeddings_in_catalog_order(tmp_path, dataset):
    weights, ids, vectors = tower_and_items(tmp_path, dataset)
    shuffled = np.random.default_rng(1).permutation(len(ids))
    frame = pd.DataFrame({"item_id": ids[shuffled], "embedding": list(vectors[shuffled])})
    frame.to_parquet(tmp_path / "items.parquet")
    prepared = prepare_tower(tmp_path, dataset, tmp_path / "items.parquet")
    np.testing.assert_array_equal(prepared.item_embeddings, vectors)
    tower, parity = prepared.user_tower
    assert parity["max_abs_diff"] == 0
    users = np.array([[5], [10**12]], dtype=np.int64)
    (served,) = ort.InferenceSession(str(tower)).run(["user_embedding"], {"user_id": users})
    np.testing.assert_allclose(served, (users % 97) * weights[:1] + weights[1], rtol=1e-6)


@pytest.mark.parametrize(
    "edit, message",
    [
        ("unknown", r"1 item id\(s\) not in the catalog: 999999"),
        ("missing", r"1 catalog item\(s\) have no embedding: "),
        ("twice", r"item id\(s\) given twice: "),
        ("dim", "the user tower answers dimension 8 but the item embeddings have dimension 4"),
        ("broken", "two_tower.item_embeddings: .* does not load"),
        ("arrays", "needs arrays item_ids and embeddings"),
    ],
)
def test_two_tower_mistakes_are_clear_errors(tmp_path, dataset, edit, message):
    _, ids, vectors = tower_and_items(tmp_path, dataset)
    path = tmp_path / "items.npz"
    if edit == "unknown":
        ids, vectors = np.append(ids, 999999), np.vstack([vectors, vectors[:1]])
    elif edit == "missing":
        ids, vectors = ids[1:], vectors[1:]
    elif edit == "twice":
        ids, vectors = np.append(ids, ids[0]), np.vstack([vectors, vectors[:1]])
    elif edit == "dim":
        vectors = vectors[:, :4]
    np.savez(path, item_ids=ids, embeddings=vectors)
    if edit == "broken":
        path.write_bytes(b"PK broken")
    elif edit == "arrays":
        np.savez(path, ids=ids, embeddings=vectors)
    with pytest.raises(OwnModelError, match=message):
        prepare_tower(tmp_path, dataset, path)


def write_booster(path, features, seed=0):
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(200, len(features)))
    y = (x.sum(axis=1) + rng.normal(scale=0.3, size=200) > len(features) / 2).astype(int)
    settings = {"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1}
    data = lgb.Dataset(x, y, feature_name=list(features))
    booster = lgb.train(settings, data, 5)
    booster.save_model(str(path))
    return booster


def test_a_lightgbm_ranker_serves_as_lightgbm_scores(tmp_path, dataset, sample):
    features = ("category", "retrieval_score", "log_popularity")
    booster = write_booster(tmp_path / "ranker.txt", features)
    spec = ranker_spec(tmp_path / "ranker.txt", features)
    parity = own_models.prepare_ranker("search_ranker", spec, dataset, tmp_path / "w")
    assert parity["against"] == "lightgbm" and parity["max_abs_diff"] <= 1e-5
    sparse, dense = sample
    (served,) = ort.InferenceSession(str(tmp_path / "w")).run(
        ["score"], {"sparse": sparse, "dense": dense}
    )
    columns = declared_columns(sparse, dense, features)
    expected = booster.predict(columns.reshape(-1, 3)).reshape(served.shape)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    other = ranker_spec(tmp_path / "ranker.txt", ("category", "retrieval_score", "price_gap"))
    with pytest.raises(OwnModelError, match="search_ranker: .*missing: price_gap"):
        own_models.prepare_ranker("search_ranker", other, dataset, tmp_path / "w")


def test_a_teams_two_tower_and_recommend_ranker_build_a_recommend_release(tmp_path, dataset):
    """Nothing trained: the offline recommend pipeline scores with the team's ranker over the
    team's tower and item embeddings."""
    from builders.offline import OfflinePipeline
    from builders.retrieval import item_matrix

    _, ids, vectors = tower_and_items(tmp_path, dataset)
    np.savez(tmp_path / "items.npz", item_ids=ids, embeddings=vectors)
    module = files.write_onnx_ranker(tmp_path / "r.onnx", len(FEATURES))
    own = OwnModels(
        recommend_ranker=ranker_spec(tmp_path / "r.onnx"),
        two_tower=own_models.TwoTowerSpec(tmp_path / "tower.onnx", tmp_path / "items.npz"),
    )
    repo = tmp_path / "repo"
    only = (names.USER_TOWER, names.RANKING_FEATURES, names.RECOMMEND_RANKER, names.TOP_K)
    build(BuildOptions(repo=repo, only=(*only, names.RECOMMEND), own=own), dataset)
    np.testing.assert_array_equal(item_matrix(repo / names.RECOMMEND_INDEX / "1"), vectors)
    config = parse_pbtxt((repo / names.RECOMMEND_RANKER / CONFIG).read_text())
    assert config["backend"] == "onnxruntime"

    def team_ranker(sparse, dense):
        with torch.no_grad():
            return module(torch.from_numpy(declared_columns(sparse, dense))).numpy()

    offline = OfflinePipeline(repo, names.RECOMMEND, 1)
    users = [*dataset.sample_user_ids(3, seed=2).tolist(), 10**12]
    served = offline.run(10, user_ids=users)
    for (ids_a, scores_a), (ids_b, scores_b) in zip(
        served, offline.run(10, user_ids=users, ranker=team_ranker)
    ):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(scores_a, scores_b, atol=1e-5)


def test_the_command_line_reports_a_build_file_mistake_and_writes_nothing(tmp_path, capsys):
    from builders.__main__ import main

    path = write_file(tmp_path, GOOD.replace("  inputs:", "  input:"))
    out = tmp_path / "repo"
    assert main(["build", "--models-file", str(path), "--out", str(out)]) == 2
    assert "error: search_ranker: unknown key(s) input" in capsys.readouterr().err
    assert not out.exists()
