"""README's "Deploy your own models" run as written: a tiny BERT, a LightGBM ranker and a
synonyms file made here, built from the README's build file and command, served by the real
tritonserver; `search` answers as the offline pipeline and as the team's booster would."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from builders import names
from builders.__main__ import main
from builders.data import load_dataset
from builders.offline import OfflinePipeline
from builders.repository import read_manifest
from builders.runtime.features import DENSE_FEATURES, SPARSE_FEATURES
from builders.specs import parse_pbtxt
from server import TritonServer
from tests import own_model_files as files

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> tuple[str, list[str]]:
    """The section's build file and its build command's arguments."""
    text = README.read_text()
    section = text[text.index("## Deploy your own models") :]
    section = section[: section.index("\n## ", 1)]
    models_file = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    build = next(line for line in commands if "-m builders build" in line)
    return models_file, shlex.split(build)[3:]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's example built into a repository: (repository, dataset, team's ranker,
    its declared features, encoder folder, the word only a synonym rule matches)."""
    models_file, args = readme_example()
    root = tmp_path_factory.mktemp("own")
    folder = root / "my_models"
    values = dict(zip(args[1::2], args[2::2]))  # args[0] is "build"
    dataset = load_dataset(
        values["--dataset"],
        seed=int(values["--seed"]),
        n_items=int(values["--n-items"]),
        n_users=int(values["--n-users"]),
    )
    encoder = files.write_bert_folder(folder / "encoder", dataset.catalog.title)
    features = re.search(r"features: \[(.*?)\]", models_file).group(1).split(", ")
    ranker = files.write_lightgbm_ranker(folder / "search_ranker.txt", features)
    title_word = dataset.catalog.title.iloc[0].split()[-1].lower()
    (folder / "synonyms.txt").write_text(f"# the team's rules\nzorblat => {title_word}\n")
    (folder / "models.yaml").write_text(models_file)
    args = [str(root / a) if a.startswith("my_models/") else a for a in args]
    repo = root / "repository"
    assert main([*args, "--out", str(repo)]) == 0
    return repo, dataset, ranker, features, encoder, "zorblat"


@pytest.fixture(scope="module")
def client(example):
    with TritonServer(example[0], model_control="explicit", load_models=["*"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        yield client
        client.close()


def test_the_repository_is_built_from_the_teams_models(example):
    repo, _, _, features, encoder, _ = example
    tokenizer = repo / names.QUERY_TOKENIZER / "1" / "tokenizer.json"
    assert tokenizer.read_bytes() == (encoder / "tokenizer.json").read_bytes()
    config = parse_pbtxt((repo / names.TEXT_ENCODER / "config.pbtxt").read_text())
    assert config["output"][0]["dims"] == [str(files.HIDDEN)]
    teacher = read_manifest(repo, names.TEXT_ENCODER, 1)
    assert teacher["metrics"]["own_model"]["pooling"] == "mean"
    assert teacher["parity"]["max_abs_diff"] <= 1e-4
    ranker = read_manifest(repo, names.SEARCH_RANKER, 1)
    assert ranker["metrics"]["own_model"]["inputs"][0]["features"] == features
    assert ranker["parity"]["max_abs_diff"] <= 1e-5
    assert ranker["metrics"]["own_model"]["format"] == "lightgbm"
    lexical = repo / names.HYBRID_RETRIEVAL / "1"
    assert "zorblat" in (lexical / "synonyms.txt").read_text()
    assert read_manifest(repo, names.HYBRID_RETRIEVAL, 1)["metrics"]["synonyms"]


def call(client, query, user_id, k=10):
    inputs = [grpcclient.InferInput("k", [1, 1], "INT32")]
    inputs[0].set_data_from_numpy(np.array([[k]], np.int32))
    inputs.append(grpcclient.InferInput("query", [1, 1], "BYTES"))
    inputs[1].set_data_from_numpy(np.array([[query.encode()]], dtype=object))
    if user_id is not None:
        inputs.append(grpcclient.InferInput("user_id", [1, 1], "INT64"))
        inputs[2].set_data_from_numpy(np.array([[user_id]], np.int64))
    result = client.infer(names.SEARCH, inputs)
    return result.as_numpy("item_ids")[0], result.as_numpy("scores")[0]


def test_search_serves_the_offline_pipeline_and_the_teams_ranker(example, client):
    repo, dataset, ranker, features, _, synonym = example
    queries = [synonym, *dataset.sample_queries(5, seed=5)]
    users = [None, *dataset.sample_user_ids(4, seed=5).tolist(), 10**12]

    def team_ranker(sparse, dense):
        columns = [
            sparse[..., SPARSE_FEATURES.index(f)]
            if f in SPARSE_FEATURES
            else dense[..., DENSE_FEATURES.index(f)]
            for f in features
        ]
        grid = np.stack(columns, -1).astype(np.float32)
        return ranker.predict(grid.reshape(-1, len(features))).reshape(grid.shape[:-1])

    offline = OfflinePipeline(repo, names.SEARCH, 1)
    expected = offline.run(10, queries=queries, user_ids=users)
    by_team = offline.run(10, queries=queries, user_ids=users, ranker=team_ranker)
    for query, user, (ids, scores), (team_ids, team_scores) in zip(
        queries, users, expected, by_team
    ):
        served_ids, served_scores = call(client, query, user)
        np.testing.assert_array_equal(served_ids, ids)
        np.testing.assert_allclose(served_scores, scores, atol=1e-5)
        np.testing.assert_array_equal(served_ids, team_ids)
        np.testing.assert_allclose(served_scores, team_scores, atol=1e-5)


def test_a_partial_rebuild_keeps_the_teams_tokenizer(example, tmp_path):
    """A new search ranker and release on the team's encoder embed the logged queries with
    its own tokenizer (the packaged one's ids would not fit its vocabulary)."""
    import shutil

    from builders.build import BuildOptions, build

    repo, dataset, *_ = example
    copy = tmp_path / "repository"
    shutil.copytree(repo, copy)
    only = (names.SEARCH_RANKER, names.SEARCH)
    build(BuildOptions(repo=copy, only=only, num_candidates=20), dataset)
    assert "own_model" not in read_manifest(copy, names.SEARCH_RANKER, 2)["metrics"]
    queries = dataset.sample_queries(3, seed=1)
    assert len(OfflinePipeline(copy, names.SEARCH, 2).run(5, queries=queries)) == 3


def test_update_index_embeds_new_items_with_the_teams_encoder(example, tmp_path):
    import shutil

    import pandas as pd

    repo, *_ = example
    copy = tmp_path / "repository"
    shutil.copytree(repo, copy)
    added = tmp_path / "added.csv"
    rows = {"item_id": [10**9, 10**9 + 1], "title": ["red shoes", "blue kettle"]}
    pd.DataFrame({**rows, "category": ["shoes", "kitchen"]}).to_csv(added, index=False)
    assert main(["update-index", "--repo", str(copy), "--add", str(added)]) == 0
    assert read_manifest(copy, names.SEARCH_INDEX, 2)["metrics"]["live_items"] == 302
