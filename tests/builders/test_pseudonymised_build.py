"""A pseudonymised build next to a plain one: no raw user id in anything the pseudonymised
build writes, and, through the real tritonserver, the same recommendations as the plain build
for the same users when the client hashes their ids with the build's key.

Both builds hold only the recommend models. Users are indexed by their first logged event,
not by their ids (`data.with_user_indexes`), so the two builds train the same models although
the pseudonyms sort in another order than the raw ids (checked). The users get large,
distinctive ids, so a grep for them cannot match by chance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from builders import index_stage, names, pseudonyms
from builders.build import BuildOptions, build, reconcile_served_versions
from builders.repository import RepositoryError, model_versions
from clients import Client, Route
from perf import inputs
from server import TritonServer

pytestmark = pytest.mark.slow

KEY = b"pseudonymised-user-ids-test-key!"
OTHER_KEY = b"another-key-for-another-release!"
RECOMMEND_MODELS = (
    names.USER_TOWER,
    names.RECOMMEND_INDEX,
    names.RANKING_FEATURES,
    names.RECOMMEND_RANKER,
    names.TOP_K,
    names.RECOMMEND,
)
#: Raw ids never seen by the builds (the client hashes them too: cold start).
UNKNOWN_IDS = (5, 7_300_000_000_001)


def distinctive_ids(n: int) -> np.ndarray:
    """`n` ascending ids, from 7.3e12 up, that no file holds by chance."""
    return 7_300_000_000_000 + 7_919 * np.arange(n, dtype=np.int64)


def varint(value: int) -> bytes:
    """The protobuf varint of a non-negative int (how ONNX attributes hold int64s)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def written_forms(user_id: int) -> tuple[bytes, ...]:
    """How a user id can appear in a file: decimal text, int64 (both byte orders), float64
    and a protobuf varint."""
    as_int64 = np.int64(user_id)
    return (
        str(user_id).encode(),
        as_int64.tobytes(),
        as_int64.byteswap().tobytes(),
        np.float64(user_id).tobytes(),
        varint(user_id),
    )


def files_holding(root: Path, user_ids, extra: dict[str, bytes] | None = None) -> set[str]:
    """The files under `root` (members of zip files such as .npz too) and the `extra` texts
    that hold any of `user_ids` in any written form."""
    forms = [form for user_id in user_ids for form in written_forms(int(user_id))]
    contents = dict(extra or {})
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        contents[name] = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    contents[f"{name}:{member}"] = archive.read(member)
    return {name for name, data in contents.items() if any(form in data for form in forms)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory, small_dataset):
    """The plain build (release 1) and the pseudonymised one (release 2), each in its own
    repository, with their build logs."""
    raw = np.unique(small_dataset.users["user_id"].to_numpy())
    ids = distinctive_ids(len(raw))
    # The pseudonyms do not keep the ids' order: what is trained cannot follow the ids.
    assert not np.array_equal(np.argsort(pseudonyms.pseudonyms(ids, KEY)), np.arange(len(ids)))

    def relabelled(frame):
        return frame.assign(user_id=ids[np.searchsorted(raw, frame["user_id"].to_numpy())])

    dataset = dataclasses.replace(
        small_dataset,
        interactions=relabelled(small_dataset.interactions),
        users=relabelled(small_dataset.users),
    )
    root = tmp_path_factory.mktemp("pseudonymised")
    logs = {}
    for name, version, extra in (
        ("plain", 1, {}),
        ("pseudonymised", 2, {"pseudonymise_users": True, "user_key": KEY}),
    ):
        options = BuildOptions(
            repo=root / name,
            version=version,
            only=RECOMMEND_MODELS,
            num_candidates=50,
            **extra,
        )
        with contextlib.redirect_stderr(io.StringIO()) as log:
            build(options, dataset)
        logs[name] = log.getvalue()
    return root, ids, logs, dataset


def test_no_raw_user_id_in_anything_the_pseudonymised_build_writes(builds):
    root, ids, logs, _ = builds
    plain = files_holding(root / "plain", ids, {"build log": logs["plain"].encode()})
    assert {"user_tower/1/model.onnx", "ranking_features/1/tables.npz"} <= plain
    found = files_holding(
        root / "pseudonymised", ids, {"build log": logs["pseudonymised"].encode()}
    )
    assert found == set()
    # The same grep finds the pseudonyms where the raw ids were.
    hashed = pseudonyms.pseudonyms(ids, KEY)
    assert {"user_tower/2/model.onnx", "ranking_features/2/tables.npz"} <= files_holding(
        root / "pseudonymised", hashed
    )
    fingerprint = pseudonyms.key_fingerprint(KEY)
    assert f"key fingerprint {fingerprint}" in logs["pseudonymised"]
    for model in RECOMMEND_MODELS:
        manifest = json.loads((root / "pseudonymised" / model / "2" / "manifest.json").read_text())
        assert manifest["user_ids"] == {"pseudonymised": True, "key_fingerprint": fingerprint}
        manifest = json.loads((root / "plain" / model / "1" / "manifest.json").read_text())
        assert manifest["user_ids"] == {"pseudonymised": False}


def test_hashing_clients_get_the_plain_builds_recommendations(builds, tmp_path):
    root, ids, _, dataset = builds
    repo = tmp_path / "repository"
    shutil.copytree(root / "plain", repo)
    shutil.copytree(root / "pseudonymised", repo, dirs_exist_ok=True)
    assert reconcile_served_versions(repo)[names.RECOMMEND] == [2]  # both releases served
    users = [int(u) for u in np.unique(dataset.interactions["user_id"])[::30]]  # with events
    server_log = tmp_path / "server.log"
    with TritonServer(
        repo,
        model_control="explicit",
        load_models=["*"],
        exit_timeout_secs=5,
        log_path=server_log,
    ) as server:
        pinned = {name: {names.RECOMMEND: Route.pinned(v)} for name, v in (("1", 1), ("2", 2))}
        with (
            Client(server.grpc_url, routes=pinned["1"]) as plain,
            Client(server.grpc_url, routes=pinned["2"], user_key=KEY) as hashing,
            Client(server.grpc_url, routes=pinned["2"], user_key=OTHER_KEY) as wrong_key,
        ):

            def answers(client, user_ids):
                results = [client.recommend(u, k=10) for u in user_ids]
                return [([i.item_id for i in r.items], [i.score for i in r.items]) for r in results]

            expected = answers(plain, users)
            assert answers(hashing, users) == expected
            cold_start = answers(plain, UNKNOWN_IDS)
            assert answers(hashing, UNKNOWN_IDS) == cold_start
            assert all(answer != cold_start[0] for answer in expected)  # known users differ
            # Another release's key (or none) makes every user a cold-start one.
            assert answers(wrong_key, users) == [cold_start[0]] * len(users)
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            metrics = response.read().decode()
    written = server_log.read_text() + metrics
    assert "nv_inference_request_success" in metrics
    assert not any(str(u) in written for u in ids)  # the server never saw a raw id


def test_a_new_key_does_not_mix_with_stages_built_under_the_old_one(builds, tmp_path):
    root, _, _, dataset = builds
    repo = tmp_path / "repository"
    shutil.copytree(root / "pseudonymised", repo)
    options = BuildOptions(
        repo=repo,
        only=(names.RECOMMEND,),
        pseudonymise_users=True,
        user_key=OTHER_KEY,
    )
    with pytest.raises(RepositoryError, match="built from other data"):
        build(options, dataset)
    assert model_versions(repo, names.RECOMMEND) == [2]
    # A catalog update of the index keeps the build's record.
    item = int(dataset.catalog["item_id"].iloc[0])
    result = index_stage.update_index(repo, names.RECOMMEND_INDEX, remove_ids=np.array([item]))
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["user_ids"] == pseudonyms.manifest_record(KEY)


def test_perf_inputs_hold_pseudonyms_under_the_builds_key(builds, monkeypatch):
    root, _, _, _ = builds
    repo = root / "pseudonymised"
    monkeypatch.delenv("USER_ID_KEY", raising=False)
    with pytest.raises(ValueError, match="give its key"):
        inputs.dataset_of(repo, names.RECOMMEND)
    monkeypatch.setenv("USER_ID_KEY", OTHER_KEY.decode())
    with pytest.raises(ValueError, match="is not the build's"):
        inputs.dataset_of(repo, names.RECOMMEND)
    monkeypatch.setenv("USER_ID_KEY", KEY.decode())
    dataset = inputs.dataset_of(repo, names.RECOMMEND)  # the manifest's source: synthetic
    sent = {r["user_id"][0] for r in inputs.input_data(names.RECOMMEND, dataset, repo)["data"]}
    source_ids = np.arange(1, len(dataset.users) + 1)  # the synthetic source's raw ids
    assert sent <= set(pseudonyms.pseudonyms(source_ids, KEY).tolist())
    assert sent.isdisjoint(source_ids.tolist())
