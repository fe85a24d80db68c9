"""The builder's index choice on a real build: `--index ann` on the small dataset."""

import shutil

import numpy as np
import pytest

from builders import names
from builders.ann import RecallError
from builders.build import BuildOptions, build
from builders.offline import OfflinePipeline
from builders.repository import model_versions, read_manifest, verify_version
from builders.retrieval import item_matrix
from builders.specs import parse_pbtxt


@pytest.mark.slow
def test_build_writes_a_tuned_ann_index_and_auto_keeps_the_kind(
    tmp_path, small_repository, small_dataset
):
    repo = tmp_path / "repo"
    shutil.copytree(small_repository / names.TEXT_ENCODER, repo / names.TEXT_ENCODER)
    options = dict(repo=repo, only=(names.SEARCH_INDEX,), num_candidates=50)
    # 1,500 items are too few for IVF to pay: the build fails with the figures, writes nothing
    with pytest.raises(RecallError, match=r"1,500 items reaches recall@100 0\.\d+ at best"):
        build(BuildOptions(**options, index="ann"), small_dataset)
    assert model_versions(repo, names.SEARCH_INDEX) == []

    build(BuildOptions(**options, index="ann", ann_recall_target=0.9), small_dataset)
    config = parse_pbtxt((repo / names.SEARCH_INDEX / "config.pbtxt").read_text())
    assert config["backend"] == "python"
    manifest = read_manifest(repo, names.SEARCH_INDEX, 2)
    metrics = manifest["metrics"]
    assert metrics["index"] == "ann" and metrics["items"] == len(small_dataset.catalog)
    assert metrics["recall_at_100"] >= 0.9 and metrics["ann"]["nprobe"] >= 1
    assert metrics["recall"]["recall_target"] == 0.9
    assert manifest["depends_on"] == {names.TEXT_ENCODER: 1}
    assert verify_version(repo, names.SEARCH_INDEX, 2) == []
    exact = item_matrix(small_repository / names.SEARCH_INDEX / "1")
    np.testing.assert_allclose(item_matrix(repo / names.SEARCH_INDEX / "2"), exact, atol=1e-6)
    # auto would pick exact for 1,500 items, but the model's versions share one config
    build(BuildOptions(**options, ann_recall_target=0.9), small_dataset)
    assert read_manifest(repo, names.SEARCH_INDEX, 3)["metrics"]["index"] == "ann"


@pytest.mark.slow
def test_the_offline_pipeline_searches_an_ann_index_version(
    tmp_path, small_repository, small_dataset
):
    repo = tmp_path / "repo"
    # a repository's index versions share one config: this one's index is ANN from the start
    shutil.copytree(small_repository, repo, ignore=lambda folder, _: ["search_index"])
    options = BuildOptions(
        repo=repo,
        num_candidates=50,
        only=(names.SEARCH_INDEX, names.HYBRID_RETRIEVAL, names.SEARCH),
        index="ann",
        ann_recall_target=0.9,
    )
    build(options, small_dataset)
    queries = small_dataset.sample_queries(20, seed=7)
    release = max(model_versions(repo, names.SEARCH))
    ann = OfflinePipeline(repo, names.SEARCH, release)
    index_version = ann.spec.stages["index"].version
    assert read_manifest(repo, names.SEARCH_INDEX, index_version)["metrics"]["index"] == "ann"
    exact = OfflinePipeline(small_repository, names.SEARCH, 1)
    exact_ids, exact_scores = exact.dense(queries)
    ann_ids, ann_scores = ann.dense(queries)
    assert ann_ids.shape == exact_ids.shape == (20, 50)
    found = [len(set(a) & set(e)) / 50 for a, e in zip(ann_ids, exact_ids)]
    assert np.mean(found) >= 0.9
    # the same item has the same inner product in both indexes
    for a_ids, a_scores, e_ids, e_scores in zip(ann_ids, ann_scores, exact_ids, exact_scores):
        exact_of = dict(zip(e_ids, e_scores))
        shared = [i for i, item in enumerate(a_ids) if item in exact_of]
        np.testing.assert_allclose(
            a_scores[shared], [exact_of[a_ids[i]] for i in shared], atol=1e-5
        )
