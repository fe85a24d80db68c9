"""Pseudonymised user ids: the pure mapping, the key rules, the build option and the clients."""

import hashlib
import hmac

import numpy as np
import pytest

from builders import pseudonyms
from builders.__main__ import main as build_main
from builders.build import BuildOptions
from clients import Client, cli
from clients.errors import InvalidArgumentError

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_pseudonym_is_the_keyed_hash_as_a_non_negative_int64():
    digest = hmac.new(KEY, b"12345", hashlib.sha256).digest()
    assert pseudonyms.pseudonym(12345, KEY) == int.from_bytes(digest[:8], "big") % (2**63 - 1)
    values = pseudonyms.pseudonyms(np.arange(-5, 2000), KEY)
    assert values.dtype == np.int64 and (values >= 0).all() and (values < 2**63 - 1).all()
    assert len(np.unique(values)) == len(values)


def test_pseudonyms_depend_on_the_key_and_keep_shape():
    ids = np.array([[7], [3], [7]])
    mapped = pseudonyms.pseudonyms(ids, KEY)
    assert mapped.shape == (3, 1) and mapped[0, 0] == mapped[2, 0] != mapped[1, 0]
    assert mapped[0, 0] == pseudonyms.pseudonym(7, KEY)
    assert pseudonyms.pseudonym(7, OTHER_KEY) != pseudonyms.pseudonym(7, KEY)


def test_fingerprint_tells_keys_apart_without_the_key():
    fingerprint = pseudonyms.key_fingerprint(KEY)
    assert len(fingerprint) == 16 and fingerprint != pseudonyms.key_fingerprint(OTHER_KEY)
    assert KEY.hex()[:8] not in fingerprint
    assert pseudonyms.manifest_record(KEY) == {
        "pseudonymised": True,
        "key_fingerprint": fingerprint,
    }
    assert pseudonyms.manifest_record(None) == {"pseudonymised": False}


def test_read_key_from_file_or_environment(tmp_path):
    path = tmp_path / "user-id.key"
    path.write_bytes(KEY + b"\n")
    assert pseudonyms.read_key(path, environ={}) == KEY
    assert pseudonyms.read_key(path, environ={"USER_ID_KEY": "x" * 40}) == KEY  # the file wins
    assert pseudonyms.read_key(None, environ={"USER_ID_KEY": "x" * 40}) == b"x" * 40
    assert pseudonyms.read_key(None, environ={}) is None
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="5 bytes; at least 32"):
        pseudonyms.read_key(path, environ={})
    path.write_bytes(b"\n")
    with pytest.raises(ValueError, match="is empty"):
        pseudonyms.read_key(path, environ={})
    with pytest.raises(ValueError, match="cannot read the user-id key file .*: No such file"):
        pseudonyms.read_key(tmp_path / "missing", environ={})


def test_pseudonymise_replaces_every_user_id(small_dataset):
    mapped = pseudonyms.pseudonymise(small_dataset, KEY)
    raw_log = small_dataset.interactions.sort_values(["user_id", "timestamp", "item_id"])
    new_log = mapped.interactions.assign(
        raw=raw_log.set_index(["timestamp", "item_id"])
        .loc[list(zip(mapped.interactions.timestamp, mapped.interactions.item_id)), "user_id"]
        .to_numpy()
    )
    assert (new_log["user_id"].to_numpy() == pseudonyms.pseudonyms(new_log["raw"], KEY)).all()
    assert set(mapped.users["user_id"]) == set(
        pseudonyms.pseudonyms(small_dataset.users["user_id"].to_numpy(), KEY)
    )
    assert not set(mapped.users["user_id"]) & set(small_dataset.users["user_id"])
    assert mapped.catalog is small_dataset.catalog or mapped.catalog.equals(small_dataset.catalog)
    assert mapped.fingerprint != small_dataset.fingerprint
    assert len(mapped.interactions) == len(small_dataset.interactions)


def test_build_options_refuse_a_missing_or_short_key(tmp_path):
    with pytest.raises(ValueError, match="needs the key: --user-key-file or \\$USER_ID_KEY"):
        BuildOptions(repo=tmp_path, pseudonymise_users=True)
    with pytest.raises(ValueError, match="at least 32"):
        BuildOptions(repo=tmp_path, pseudonymise_users=True, user_key=b"short")
    options = BuildOptions(repo=tmp_path, pseudonymise_users=True, user_key=KEY)
    assert KEY.decode() not in repr(options)


def test_build_command_refuses_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("USER_ID_KEY", raising=False)
    out = tmp_path / "repo"
    assert build_main(["build", "--out", str(out), "--pseudonymise-users"]) == 2
    assert "needs the key" in capsys.readouterr().err
    key_file = tmp_path / "key"
    key_file.write_text("too short\n")
    argv = ["build", "--out", str(out), "--pseudonymise-users", "--user-key-file", str(key_file)]
    assert build_main(argv) == 2
    assert "at least 32" in capsys.readouterr().err
    assert build_main(["build", "--out", str(out), "--user-key-file", str(key_file)]) == 2
    assert "only used with --pseudonymise-users" in capsys.readouterr().err
    assert not out.exists()


def test_clients_hash_user_ids_at_the_edge(tmp_path, monkeypatch):
    plain, keyed = Client("localhost:8001"), Client("localhost:8001", user_key=KEY)
    assert plain.user(42) == 42 and plain.user(None) is None
    assert keyed.user(42) == pseudonyms.pseudonym(42, KEY) and keyed.user(None) is None
    with pytest.raises(ValueError, match="at least 32"):
        Client("localhost:8001", user_key=b"short")
    for bad in (4.5, "7", True, 2**63):
        with pytest.raises(InvalidArgumentError, match="user_id"):
            keyed.user(bad)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    monkeypatch.delenv("USER_ID_KEY", raising=False)
    parser = cli.build_parser()
    args = parser.parse_args(["recommend", "--user", "1", "--user-key-file", str(key_file)])
    assert cli.client_options(args, "recommend")["user_key"] == KEY
    assert (
        cli.client_options(parser.parse_args(["recommend", "--user", "1"]), "recommend")["user_key"]
        is None
    )
    monkeypatch.setenv("USER_ID_KEY", OTHER_KEY.decode())
    args = parser.parse_args(["search", "shoes", "--user", "1"])
    assert cli.client_options(args, "search")["user_key"] == OTHER_KEY


def test_as_built_checks_the_key_against_the_manifest(small_dataset):
    record = pseudonyms.manifest_record(KEY)
    assert pseudonyms.as_built(small_dataset, {"pseudonymised": False}, None) is small_dataset
    assert pseudonyms.as_built(small_dataset, None, KEY) is small_dataset
    built = pseudonyms.as_built(small_dataset, record, KEY)
    assert built.fingerprint == pseudonyms.pseudonymise(small_dataset, KEY).fingerprint
    with pytest.raises(ValueError, match=f"key fingerprint {record['key_fingerprint']}"):
        pseudonyms.as_built(small_dataset, record, None)
    with pytest.raises(ValueError, match="is not the build's"):
        pseudonyms.as_built(small_dataset, record, OTHER_KEY)


def test_cli_prints_the_key_fingerprint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("USER_ID_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    assert cli.main(["key-fingerprint", "--user-key-file", str(key_file)]) == 0
    assert capsys.readouterr().out.strip() == pseudonyms.key_fingerprint(KEY)
    assert cli.main(["key-fingerprint"]) == 2
    assert "no user-id key" in capsys.readouterr().err
