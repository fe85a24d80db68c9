"""A synonyms file through the real tritonserver: a new `hybrid_retrieval` version and search
release, loaded into the running server, while the previous release answers as before."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from builders import names
from builders.build import BuildOptions, build, item_texts
from builders.offline import OfflinePipeline
from builders.pipelines import release_model
from builders.repository import model_versions, read_manifest
from builders.runtime.lexical import words
from builders.runtime.synonyms import FILE, SynonymsError, fingerprint
from server import TritonServer

pytestmark = pytest.mark.slow

#: A word no item text holds: it only reaches items through a synonym.
SHOPPER_WORD = "zorblax"
K = 50  # every candidate of the small repository


@pytest.fixture(scope="module")
def repo(tmp_path_factory, small_repository):
    path = tmp_path_factory.mktemp("synonyms") / "repository"
    shutil.copytree(small_repository, path)
    return path


@pytest.fixture(scope="module")
def server(repo):
    with TritonServer(
        repo, model_control="explicit", load_models=[release_model(names.SEARCH, 1)]
    ) as triton:
        yield triton


@pytest.fixture(scope="module")
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def search(client, model: str, query: str) -> list[int]:
    inputs = []
    for name, value, datatype in (
        ("query", np.array([[query.encode()]], dtype=object), "BYTES"),
        ("k", np.array([[K]], np.int32), "INT32"),
        ("user_id", np.array([[10**12]], np.int64), "INT64"),
    ):
        tensor = grpcclient.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return result.as_numpy("item_ids")[0].tolist()


def rare_word(dataset, excluded: set[int]) -> tuple[str, set[int]]:
    """A title word that the fewest items hold, none of them in `excluded` (item ids): the
    word and the ids of its items."""
    ids = np.sort(dataset.catalog.item_id.to_numpy())
    holders: dict[str, set[int]] = {}
    for item_id, text in zip(ids, item_texts(dataset)):
        for word in re.findall(r"[a-z]{4,}", text.lower()):
            holders.setdefault(word, set()).add(int(item_id))
    analysed = dict(zip(holders, words(list(holders))))
    free = [w for w, items in holders.items() if not items & excluded and len(analysed[w]) == 1]
    word = min(free, key=lambda w: (len(holders[w]), w))
    return word, holders[word]


def test_a_synonyms_release_finds_what_only_a_synonym_matches(
    repo, server, client, small_dataset, tmp_path
):
    before = search(client, release_model(names.SEARCH, 1), SHOPPER_WORD)
    word, targets = rare_word(small_dataset, set(before))
    assert len(targets) <= 3

    # A bad file is refused before anything is written.
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{SHOPPER_WORD} => {word}\nsofa,, couch\n")
    versions = {model: model_versions(repo, model) for model in names.ALL_MODELS}
    with pytest.raises(SynonymsError, match=f"{bad}:2: "):
        build(BuildOptions(repo=repo, synonyms=bad), small_dataset)
    assert {model: model_versions(repo, model) for model in names.ALL_MODELS} == versions

    good = tmp_path / "synonyms.txt"
    good.write_text(f"# merchandising\n{SHOPPER_WORD} => {word}\n")
    options = BuildOptions(
        repo=repo,
        synonyms=good,
        only=(names.HYBRID_RETRIEVAL, names.SEARCH),
        num_candidates=K,
    )
    build(options, small_dataset)
    manifest = read_manifest(repo, names.HYBRID_RETRIEVAL, 2)
    assert manifest["metrics"]["synonyms"]["sha256"] == fingerprint(good.read_text())
    assert manifest["files"][FILE] == fingerprint(good.read_text())
    # Release 2 serves it inside its query stage, composed of the new version.
    assert read_manifest(repo, names.SEARCH, 2)["depends_on"][names.SEARCH_QUERY] == 2
    assert read_manifest(repo, names.SEARCH_QUERY, 2)["depends_on"][names.HYBRID_RETRIEVAL] == 2

    # Into the running server, no restart: the release's query stage (now serving versions 1
    # and 2), the release and `search`, now release 2.
    release = release_model(names.SEARCH, 2)
    for model in (names.SEARCH_QUERY, release, names.SEARCH):
        server.load_model(model)
    found = search(client, release, SHOPPER_WORD)
    assert targets <= set(found)
    assert search(client, names.SEARCH, SHOPPER_WORD) == found
    offline = OfflinePipeline(repo, names.SEARCH, 2).run(K, [SHOPPER_WORD], [10**12])
    assert offline[0][0].tolist() == found
    # The previous release answers as before: without the synonym.
    assert search(client, release_model(names.SEARCH, 1), SHOPPER_WORD) == before
