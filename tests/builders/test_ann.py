"""The ANN index stage: tuning to the recall target, the kind choice and catalog updates."""

import json

import numpy as np
import pytest

from builders import ann, index_stage
from builders.__main__ import main as builders_main
from builders.build import BuildOptions
from builders.repository import RepositoryError, read_manifest
from builders.retrieval import exact_top_k, index_items, item_matrix
from builders.runtime.ann_index import PAD_SCORE, AnnIndex
from builders.specs import parse_pbtxt
from tests.fake_pb_utils import import_model, outputs


def clustered(n, dim=32, clusters=40, spread=0.8, seed=0):
    """A Gaussian mixture on the unit sphere (clustered like real embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)]
    x = x + rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def items():
    return clustered(4000)


def test_tuning_reaches_the_recall_target_on_held_out_queries(items):
    tuned = ann.tune(
        items,
        ann.probe_queries(items, 200, seed=1),
        ann.probe_queries(items, 300, seed=2),
        k=50,
        target=0.99,
    )
    assert tuned.params.nlist == ann.default_nlist(len(items))
    assert 1 <= tuned.params.nprobe <= tuned.params.nlist * ann.MAX_PROBE_FRACTION
    assert tuned.metrics["recall_at_k"] >= 0.99
    assert tuned.metrics["nprobe_curve"][str(tuned.params.nprobe)] >= 0.99
    # the index answers what exact search answers on fresh queries
    queries = ann.probe_queries(items, 100, seed=3)
    _, found = tuned.index.search(queries, 50)
    truth, _ = exact_top_k(items, queries, 50)
    assert ann.recall_at_k(found, truth) >= 0.98


def test_unreachable_target_fails_with_the_figures():
    rng = np.random.default_rng(0)
    uniform = rng.standard_normal((3000, 64)).astype(np.float32)  # no clusters: hard
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    queries = ann.probe_queries(uniform, 100, seed=1, noise=2.0)
    with pytest.raises(ann.RecallError, match=r"recall@100 0\.\d+ at best .*below the target 0.99"):
        ann.tune(uniform, queries, queries, max_probe_fraction=0.05)


def test_kind_by_catalog_size_and_overrides():
    assert index_stage.choose_kind(1500) == "exact"
    assert index_stage.choose_kind(index_stage.ANN_MIN_ITEMS) == "ann"
    assert index_stage.choose_kind(10, "ann") == "ann"
    assert index_stage.choose_kind(10**7, "exact") == "exact"
    assert index_stage.choose_kind(10**7, "auto", existing="exact") == "exact"
    with pytest.raises(RepositoryError, match="share one config"):
        index_stage.choose_kind(10**7, "ann", existing="exact")
    with pytest.raises(ValueError, match="index must be one of"):
        BuildOptions(repo="x", index="hnsw")


@pytest.mark.parametrize("kind", ["exact", "ann"])
def test_empty_catalog_is_refused(tmp_path, kind):
    with pytest.raises(ValueError, match="the catalog is empty"):
        index_stage.write_standalone(
            tmp_path, "search_index", np.zeros((0, 8), np.float32), np.zeros(0), kind=kind
        )
    with pytest.raises(ValueError, match="the catalog is empty"):
        index_stage.choose_kind(0)


def test_ann_version_layout_and_search(tmp_path, items):
    ids = np.arange(len(items), dtype=np.int64) * 10 + 7
    path, metrics = index_stage.write_standalone(
        tmp_path, "search_index", items, ids, kind="ann", num_candidates=50
    )
    files = {"model.py", "ann_index.py", "stage_glue.py", "index.faiss", "ann.json", "item_ids.npy"}
    assert files <= {p.name for p in path.iterdir()}
    config = parse_pbtxt((tmp_path / "search_index" / "config.pbtxt").read_text())
    assert config["backend"] == "python"
    assert [o["name"] for o in config["output"]] == ["candidate_indexes", "candidate_scores"]
    assert metrics["recall_at_100"] >= 0.99 and metrics["ann"]["nprobe"] >= 1
    assert read_manifest(tmp_path, "search_index", 1)["metrics"]["index"] == "ann"
    np.testing.assert_array_equal(np.load(path / "item_ids.npy"), ids)
    np.testing.assert_array_equal(item_matrix(path), items)  # ranker training reads this

    index = AnnIndex.load(path, 50, device="cpu")
    queries = ann.probe_queries(items, 20, seed=5)
    indexes, scores = index.search(queries)
    assert indexes.dtype == np.int64 and indexes.shape == (20, 50)
    assert scores.dtype == np.float32 and (np.diff(scores, axis=1) <= 1e-6).all()
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ items.T, indexes, axis=1), atol=1e-5
    )


def test_ann_model_batch_equals_each_request_alone(tmp_path, items, monkeypatch):
    """One FAISS search for the batch; a query of the wrong width fails alone."""
    ids = np.arange(len(items), dtype=np.int64)
    path, _ = index_stage.write_standalone(
        tmp_path, "search_index", items, ids, kind="ann", num_candidates=20
    )
    stage = import_model(path, "ann_index", monkeypatch=monkeypatch).TritonPythonModel()
    config = {
        "output": [{"name": "candidate_indexes", "dims": [20]}],
        "parameters": {"device": {"string_value": "cpu"}},
    }
    stage.initialize({"model_config": json.dumps(config)})
    queries = ann.probe_queries(items, 5, seed=6)
    requests = [{"query_embedding": queries[i : i + 1]} for i in range(5)]
    requests[2] = {"query_embedding": queries[2:3, :-1]}
    batched = [outputs(r) for r in stage.execute(requests)]
    alone = [outputs(stage.execute([r])[0]) for r in requests]
    assert (
        batched[2]
        == alone[2]
        == ("INVALID_ARG", "query_embedding must be [batch, 32], got (1, 31)")
    )
    for index in (0, 1, 3, 4):
        for name in ("candidate_indexes", "candidate_scores"):
            np.testing.assert_array_equal(batched[index][name], alone[index][name])
            assert batched[index][name].shape == (1, 20)


def test_fewer_items_than_candidates_pad(tmp_path):
    few = clustered(60, clusters=3)
    path, _ = index_stage.write_standalone(
        tmp_path, "recommend_index", few, np.arange(60), kind="ann", num_candidates=100
    )
    # num_candidates is capped by the catalog for a new model, like the exact index
    assert parse_pbtxt((tmp_path / "recommend_index" / "config.pbtxt").read_text())["output"][0][
        "dims"
    ] == ["60"]
    index = AnnIndex.load(path, 80, nprobe=1, device="cpu")  # probe one list: fewer found
    indexes, scores = index.search(few[:3])
    assert (indexes == -1).any() and (scores[indexes == -1] == PAD_SCORE).all()


def live_answers(folder, queries, n):
    positions, vectors = index_items(folder)
    rows, _ = exact_top_k(vectors, queries, n)
    return positions[rows]


@pytest.mark.parametrize("kind", ["exact", "ann"])
def test_update_masks_removed_and_appends_new_items(tmp_path, items, kind):
    ids = np.arange(len(items), dtype=np.int64) + 1000
    index_stage.write_standalone(tmp_path, "search_index", items, ids, kind=kind, num_candidates=50)
    new = clustered(30, seed=9)
    removed_ids = ids[[0, 5, 17]]
    result = index_stage.update_index(
        tmp_path,
        "search_index",
        add_ids=np.arange(30) + 99_000,
        add_embeddings=new,
        remove_ids=removed_ids,
    )
    assert result.version == 2
    folder = tmp_path / "search_index" / "2"
    mapping = np.load(folder / "item_ids.npy")
    np.testing.assert_array_equal(mapping[: len(ids)], ids)  # old positions never move
    np.testing.assert_array_equal(mapping[len(ids) :], np.arange(30) + 99_000)
    positions, vectors = index_items(folder)
    assert len(positions) == len(items) - 3 + 30
    assert not set(positions) & {0, 5, 17}
    np.testing.assert_array_equal(vectors[positions >= len(ids)], new)
    update = read_manifest(tmp_path, "search_index", 2)["catalog_update"]
    assert (update["appended"], update["removed"], update["base_version"]) == (30, 3, 1)
    assert result.metrics["live_items"] == len(items) - 3 + 30
    # both versions served: a running server picks the new one up with load_model
    assert index_stage.served_versions(tmp_path, "search_index") == [1, 2]

    # served answers: removed items never come back, a new item finds itself first
    queries = np.concatenate([items[[0, 5, 17]], new[:5]])
    if kind == "ann":
        answered, _ = AnnIndex.load(folder, 50, device="cpu").search(queries)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"))
        answered = session.run(["candidate_indexes"], {"query_embedding": queries})[0]
    assert not np.isin(answered, [0, 5, 17]).any()
    np.testing.assert_array_equal(answered[3:, 0], len(ids) + np.arange(5))
    truth = live_answers(folder, queries, 50)
    assert ann.recall_at_k(answered, truth) >= 0.98

    # appended items change the data fingerprint (pipelines built from the old data refuse
    # to pin the version); a removal-only update keeps it
    fingerprints = [
        read_manifest(tmp_path, "search_index", v)["dataset"]["fingerprint"] for v in (1, 2)
    ]
    assert fingerprints[0] != fingerprints[1]
    index_stage.update_index(tmp_path, "search_index", remove_ids=ids[[1]])
    assert read_manifest(tmp_path, "search_index", 3)["dataset"]["fingerprint"] == (fingerprints[1])


def test_update_restores_replaces_and_refuses_bad_input(tmp_path, items):
    ids = np.arange(len(items), dtype=np.int64)
    index_stage.write_standalone(tmp_path, "search_index", items, ids, kind="ann")
    index_stage.update_index(tmp_path, "search_index", remove_ids=[3])
    moved = clustered(1, seed=4)
    result = index_stage.update_index(
        tmp_path,
        "search_index",
        add_ids=[3, 4],
        add_embeddings=np.concatenate([moved, moved]),
        remove_ids=[4],
    )  # 3 comes back (restocked), 4 gets a new embedding: both at their old positions
    assert result.metrics["catalog_update"]["appended"] == 0
    positions, vectors = index_items(result.path)
    assert len(positions) == len(items)
    np.testing.assert_array_equal(vectors[[3, 4]], np.concatenate([moved, moved]))
    with pytest.raises(ValueError, match="not in search_index version 3"):
        index_stage.update_index(tmp_path, "search_index", remove_ids=[10**9])
    with pytest.raises(ValueError, match="already in search_index"):
        index_stage.update_index(tmp_path, "search_index", add_ids=[5], add_embeddings=moved)
    with pytest.raises(ValueError, match="nothing to update"):
        index_stage.update_index(tmp_path, "search_index")
    with pytest.raises(ValueError, match="dim"):
        index_stage.update_index(
            tmp_path, "search_index", add_ids=[10**6], add_embeddings=np.zeros((1, 5))
        )


def test_update_refuses_to_empty_the_catalog(tmp_path):
    few = clustered(5, clusters=2)
    index_stage.write_standalone(tmp_path, "search_index", few, np.arange(5), kind="exact")
    with pytest.raises(ValueError, match="empty catalog"):
        index_stage.update_index(tmp_path, "search_index", remove_ids=np.arange(5))
    # an exact index left with fewer items than candidates pads like FAISS does
    result = index_stage.update_index(tmp_path, "search_index", remove_ids=[0, 1])
    import onnxruntime as ort

    session = ort.InferenceSession(str(result.path / "model.onnx"))
    indexes, scores = session.run(None, {"query_embedding": few[:2]})
    assert indexes.shape == (2, 5)
    assert set(indexes[0, :3]) == {2, 3, 4} and (indexes[:, 3:] == -1).all()
    assert (scores[:, 3:] == PAD_SCORE).all()


def test_update_cli(tmp_path, items, capsys):
    ids = np.arange(len(items), dtype=np.int64)
    index_stage.write_standalone(tmp_path, "recommend_index", items, ids, kind="ann")
    np.savez(tmp_path / "new.npz", item_ids=np.array([50_000]), embeddings=clustered(1, seed=8))
    (tmp_path / "sold_out.txt").write_text("# sold out\n12\n\n13\n")
    argv = ["update-index", "--repo", str(tmp_path), "--model", "recommend_index"]
    code = builders_main(
        [
            *argv,
            "--add-embeddings",
            str(tmp_path / "new.npz"),
            "--remove",
            str(tmp_path / "sold_out.txt"),
        ]
    )
    assert code == 0
    assert "version 2: 1 appended, 0 restored/replaced, 2 removed" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("12\nabc\n")
    assert builders_main([*argv, "--remove", str(tmp_path / "bad.txt")]) == 2
    assert "bad.txt:2: not an item id" in capsys.readouterr().err
    assert json.loads((tmp_path / "recommend_index" / "2" / "ann.json").read_text())["nprobe"] >= 1


def test_faiss_is_pinned_here_and_in_the_gpu_image():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert '"faiss-cpu==' in (root / "pyproject.toml").read_text()
    assert "faiss-gpu-cu12==" in (root / "k8s" / "image" / "Dockerfile").read_text()


def test_cli_flags():
    from builders.__main__ import parse_args

    assert parse_args(["build"]).index == "auto"
    args = parse_args(["build", "--index", "ann", "--ann-recall-target", "0.995"])
    assert (args.index, args.ann_recall_target) == ("ann", 0.995)
    with pytest.raises(SystemExit):
        parse_args(["build", "--index", "hnsw"])
